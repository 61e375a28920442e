"""ACK messages: header swap, MSA, and ERR in both the v2.3/2.4 and v2.5+ forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.hl7v2.ack import build_ack, read_header
from adapters.hl7v2.errors import Hl7Error
from adapters.hl7v2.message import parse
from adapters.hl7v2.translate import translate_bytes

HL7 = Path(__file__).resolve().parents[2] / "shared" / "samples" / "hl7v2"


def test_aa_swaps_sender_and_receiver_and_echoes_the_control_id() -> None:
    raw = (HL7 / "fhirconverter_ADT01-28.hl7").read_bytes()
    ack = parse(build_ack(raw, "AA"))
    msh = ack.msh
    assert (msh.get(3), msh.get(4), msh.get(5), msh.get(6)) == (
        "GHH LAB, INC.", "GOOD HEALTH HOSPITAL", "ADT1", "GOOD HEALTH HOSPITAL")
    assert [msh.get(9, i) for i in (1, 2, 3)] == ["ACK", "A01", "ACK"]
    assert msh.get(10).startswith("ACK") and msh.get(10) != "MSG00001"
    assert msh.get(11) == "P"
    assert msh.get(12) == "2.5.1"
    msa = ack.first("MSA")
    assert msa is not None and (msa.get(1), msa.get(2)) == ("AA", "MSG00001")
    assert ack.first("ERR") is None


def test_control_ids_of_acks_are_unique() -> None:
    raw = (HL7 / "hapi_adt_a03.hl7").read_bytes()
    ids = {parse(build_ack(raw, "AA")).msh.get(10) for _ in range(50)}
    assert len(ids) == 50


def test_ar_for_unsupported_type_has_err_with_code_200() -> None:
    raw = (HL7 / "fhirconverter_ORM-O01-01.hl7").read_bytes()
    with pytest.raises(Hl7Error) as info:
        translate_bytes(raw)
    ack = parse(build_ack(raw, info.value.ack_code, info.value))
    msa = ack.first("MSA")
    assert msa is not None and (msa.get(1), msa.get(2)) == ("AR", "MSG00018")
    err = ack.first("ERR")
    assert err is not None
    # ERR-1 (v2.3/2.4): segment ^ sequence ^ field ^ code&text&table
    assert [err.get(1, i) for i in (1, 2, 3)] == ["MSH", "1", "9"]
    assert [err.get(1, 4, s) for s in (1, 2, 3)] == ["200", "Unsupported message type", "HL70357"]
    # ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 text
    assert [err.get(2, i) for i in (1, 2, 3)] == ["MSH", "1", "9"]
    assert [err.get(3, i) for i in (1, 2, 3)] == ["200", "Unsupported message type", "HL70357"]
    assert err.get(4) == "E"
    assert err.get(8) == "MSH-9.1: Message type ORM is not supported (ADT and ORU^R01 are)"


def test_ae_for_adt_without_pid_names_the_segment() -> None:
    raw = b"MSH|^~\\&|A|F|B|G|20240101||ADT^A01|X1|P|2.4\rEVN|A01|20240101\rPV1|1|I\r"
    with pytest.raises(Hl7Error) as info:
        translate_bytes(raw)
    assert info.value.ack_code == "AE"
    ack = parse(build_ack(raw, "AE", info.value))
    err = ack.first("ERR")
    assert err is not None
    assert err.get(2, 1) == "PID" and err.get(3, 1) == "100"
    assert err.get(8) == "PID: Required segment PID is missing"
    assert ack.msh.get(12) == "2.4"


def test_error_text_with_delimiters_is_escaped_in_the_ack() -> None:
    raw = b"MSH|^~\\&|A|F|B|G|20240101||ADT^A01|X1|P|2.5\r"
    ack_text = build_ack(raw, "AE", text="bad | field ^ here")
    err = parse(ack_text).first("ERR")
    assert err is not None and err.get(8) == "bad | field ^ here"


def test_ack_uses_the_message_delimiters() -> None:
    raw = b"MSH#$*/!#LAB#F#EHR#G#2024##ADT$A08#Z9#T#2.6\rPID#1##1$$$A\r"
    text = build_ack(raw, "AA")
    assert text.startswith("MSH#$*/!#EHR#G#LAB#F#")
    assert "ACK$A08$ACK" in text
    assert "\rMSA#AA#Z9\r" in text


def test_header_of_unparseable_input_still_gives_an_ack() -> None:
    assert read_header(b"garbage").control_id == ""
    ack = parse(build_ack(b"garbage", "AR", text="Message does not start with an MSH segment"))
    msa = ack.first("MSA")
    assert msa is not None and msa.get(1) == "AR"


@pytest.mark.parametrize(
    "raw",
    [
        b"MSH^^~\\&|A|F|B|G|20240101||ADT^A01|X1|P|2.5\rPID|1\r",  # MSH-1 is a component sep
        b"MSH|^^\\&|A|F|B|G|20240101||ADT^A01|X1|P|2.5\rPID|1\r",  # MSH-2 repeats ^
        b"MSH|AB|A|F|B|G|20240101||ADT^A01|X1|P|2.5\rPID|1\r",  # letters as separators
    ],
)
def test_ack_for_unusable_encoding_characters_uses_the_standard_ones(raw: bytes) -> None:
    """HL7 v2.5 section 2.5.4: the ACK must itself be readable, so when the message's
    MSH-1/MSH-2 cannot serve as separators it is written with |^~\\&."""
    text = build_ack(raw, "AE", text="MSH-2 encoding characters are not distinct")
    assert text.startswith("MSH|^~\\&|")
    ack = parse(text)
    assert ack.msh.get(9, 1) == "ACK"
    msa = ack.first("MSA")
    assert msa is not None and msa.get(1) == "AE"
    err = ack.first("ERR")
    assert err is not None and err.get(8) == "MSH-2 encoding characters are not distinct"
    if raw[3:4] == b"|":
        assert msa.get(2) == "X1"  # the field separator is sound: MSH-10 is still echoed
