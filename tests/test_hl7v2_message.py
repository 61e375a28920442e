"""Reading HL7v2 text: framing quirks, delimiters, escapes, and DTM to FHIR dateTime."""

from __future__ import annotations

from datetime import timedelta, timezone
from decimal import Decimal

import pytest

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2.errors import Hl7Error, Location
from adapters.hl7v2.message import Delimiters, parse, split_messages, unescape

MSG = (
    "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240301101530+0700||ORU^R01|C1|P|2.5.1\r"
    "PID|1||123^^^HOSP^MR~456^^^NHS&2.16.840.1.113883.2.1.4.1&ISO^NH||Doe^Jane^Q~Smith^Jane^^^^^M\r"
)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(MSG, id="CR"),
        pytest.param(MSG.replace("\r", "\n"), id="LF"),
        pytest.param(MSG.replace("\r", "\r\n"), id="CRLF"),
        pytest.param("\ufeff" + MSG, id="BOM"),
        pytest.param(MSG.replace("\r", "\r\r\n"), id="blank-lines"),
    ],
)
def test_segment_separators_and_bom_give_the_same_segments(text: str) -> None:
    msg = parse(text.encode("utf-8"))
    assert [s.name for s in msg.segments] == ["MSH", "PID"]
    assert msg.control_id == "C1"
    assert msg.message_type == "ORU" and msg.trigger_event == "R01"
    pid = msg.first("PID")
    assert pid is not None
    assert pid.get(3) == "123"
    assert pid.get(3, 4, 2, rep=1) == "2.16.840.1.113883.2.1.4.1"
    assert pid.get(5, 1, rep=1) == "Smith" and pid.get(5, 7, rep=1) == "M"


def test_custom_delimiters_from_msh1_and_msh2() -> None:
    text = "MSH#$*/!#LAB#HOSP#EHR#HOSP#20240301##ADT$A01#C2#P#2.4\rPID#1##77$$$AUTH$MR*78$$$AUTH#"
    msg = parse(text)
    assert msg.delimiters == Delimiters("#", "$", "*", "/", "!")
    assert msg.trigger_event == "A01"
    pid = msg.first("PID")
    assert pid is not None
    assert [pid.get(3, rep=i) for i in (0, 1)] == ["77", "78"]
    assert pid.get(3, 4) == "AUTH"


def test_doubled_escape_character_in_msh2_is_repaired() -> None:
    # lfh_sample_unix.hl7 sends MSH-2 as ^~\\& (the escape character written twice)
    msg = parse("MSH|^~\\\\&|A|B|C|D|20120912011230||ADT^A01|102|T|2.6\rPID|1||X^^^A&1.2&ISO")
    assert msg.delimiters.subcomponent == "&"
    assert msg.first("PID").get(3, 4, 2) == "1.2"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b", "a^b"),
        ("Salmonella \\T\\ Shigella", "Salmonella & Shigella"),
        ("a\\R\\b", "a~b"),
        ("C:\\E\\temp", "C:\\temp"),
        ("line1\\.br\\line2", "line1\nline2"),
        ("\\X48656C6C6F\\", "Hello"),
        ("\\XC3A9\\t\\XC3A9\\", "été"),
        ("\\H\\bold\\N\\", "bold"),
        ("ends with \\r", "ends with \\r"),  # unterminated: kept as sent
    ],
)
def test_escape_sequences(escaped: str, plain: str) -> None:
    assert unescape(escaped, Delimiters()) == plain


def test_escapes_are_decoded_after_splitting() -> None:
    msg = parse("MSH|^~\\&|A|B|C|D|2024||ADT^A08|9|P|2.5\rPID|1||1^^^X||O\\T\\Brien\\S\\Jr^Pat")
    pid = msg.first("PID")
    assert pid is not None
    assert pid.get(5, 1) == "O&Brien^Jr"
    assert pid.get(5, 2) == "Pat"


def test_message_without_msh_is_an_error_naming_msh() -> None:
    with pytest.raises(Hl7Error, match="does not start with an MSH") as info:
        parse(b"PID|1||123\r")
    assert info.value.location == Location("MSH", 1)
    assert info.value.code == "100"


def test_split_messages_on_msh_at_segment_start() -> None:
    data = ("\ufeff" + MSG + MSG.replace("C1", "C2")).replace("\r", "\r\n").encode()
    parts = split_messages(data)
    assert len(parts) == 2
    assert parse(parts[1]).control_id == "C2"
    assert parts[0].count("\r") == 2 and "\n" not in parts[0]


def test_split_messages_drops_mllp_framing() -> None:
    data = ("\x0b" + MSG + "\x1c\r" + "\x0b" + MSG.replace("C1", "C2") + "\x1c\r").encode()
    parts = split_messages(data)
    assert [parse(p).control_id for p in parts] == ["C1", "C2"]
    assert not any(ch in "".join(parts) for ch in "\x0b\x1c")


UTC = dt.Hl7Options()
LOC = Location("OBX", 1, 14)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240301101530+0700", "2024-03-01T10:15:30+07:00"),
        ("20240301101530.1234-0500", "2024-03-01T10:15:30.1234-05:00"),
        ("202403011015+0100", "2024-03-01T10:15:00+01:00"),
        ("2024030110", "2024-03-01T10:00:00+00:00"),
        ("20240301", "2024-03-01"),
        ("202403", "2024-03"),
        ("2024", "2024"),
    ],
)
def test_dtm_keeps_precision_and_offset(value: str, expected: str) -> None:
    assert dt.dtm(value, LOC, UTC) == expected


def test_dtm_without_offset_uses_the_configured_zone() -> None:
    options = dt.Hl7Options(local_tz=timezone(timedelta(hours=-5)))
    assert dt.dtm("20240301101530", LOC, options) == "2024-03-01T10:15:30-05:00"


def test_dtm_without_offset_follows_daylight_saving_of_a_named_zone() -> None:
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        new_york = zoneinfo.ZoneInfo("America/New_York")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database on this machine")
    options = dt.Hl7Options(local_tz=new_york)
    assert dt.dtm("20240701120000", LOC, options) == "2024-07-01T12:00:00-04:00"
    assert dt.dtm("20240115120000", LOC, options) == "2024-01-15T12:00:00-05:00"


@pytest.mark.parametrize("value", ["Aug 15, 1942", "20241301", "20240230", "2024030125"])
def test_bad_dtm_is_a_data_type_error_at_its_field(value: str) -> None:
    with pytest.raises(Hl7Error) as info:
        dt.dtm(value, LOC, UTC)
    assert info.value.code == "102"
    assert str(info.value.location) == "OBX-14"
    assert value not in str(info.value)  # the value itself is never echoed


def test_decimal_keeps_its_digits() -> None:
    assert str(dt.decimal("1.50")) == "1.50"
    assert dt.decimal("1.50") == Decimal("1.50")
    assert str(dt.decimal(".5")) == "0.5"
    assert dt.decimal("1.2.3") is None
