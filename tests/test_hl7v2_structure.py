"""The optional strict structure check (hl7apy), off the hot path."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.hl7v2.datatypes import Hl7Options
from adapters.hl7v2.errors import Hl7Error
from adapters.hl7v2.translate import translate_bytes, translator

HL7 = Path(__file__).resolve().parents[2] / "shared" / "samples" / "hl7v2"
STRICT = translator(Hl7Options(check_structure=True))


@pytest.mark.parametrize("name", ["fhirconverter_ADT01-28.hl7", "hapi_adt_a03.hl7"])
def test_well_formed_messages_pass(name: str) -> None:
    raw = (HL7 / name).read_bytes()
    assert STRICT(raw).bundle == translate_bytes(raw).bundle


@pytest.mark.parametrize(
    ("name", "code", "where"),
    [
        # TX lines without OBX-3, which the default mode reads as lines of the report
        ("lfh_ORU-multiline-short.hl7", "101", "OBX-3"),
        # PID-22 ethnic group sent as CE where v2.3 has IS
        ("google_oru_r01_ex6.hl7", "102", "PID-22"),
        # structurally sound, but PID-16 marital status "1" is not in table 0002
        ("fhirconverter_ADT01-23.hl7", "103", "PID-16"),
        ("fhirconverter_LAB-ORU-1.hl7", "103", "PID-16"),
    ],
)
def test_structure_errors_are_ae_with_location(name: str, code: str, where: str) -> None:
    raw = (HL7 / name).read_bytes()
    translate_bytes(raw)  # the lenient default takes it
    with pytest.raises(Hl7Error) as info:
        STRICT(raw)
    assert (info.value.ack_code, info.value.code, str(info.value.location)) == ("AE", code, where)


@pytest.mark.parametrize(
    ("segment", "where", "table"),
    [
        ("PID|1||9^^^H^MR||Roe^Ann||19700101|Q\rPV1|1|I", "PID-8", "0001"),
        ("PID|1||9^^^H^MR||Roe^Ann||19700101|F\rPV1|1|Z", "PV1-2", "0004"),
    ],
)
def test_codes_outside_their_table_are_error_103(segment: str, where: str, table: str) -> None:
    raw = f"MSH|^~\\&|A|F|B|G|20240101||ADT^A01^ADT_A01|T1|P|2.5\rEVN|A01|20240101\r{segment}\r"
    translate_bytes(raw.encode())  # the default mode maps unknown codes to "unknown"
    with pytest.raises(Hl7Error, match=f"not in HL7 table {table}") as info:
        STRICT(raw.encode())
    assert (info.value.code, str(info.value.location)) == ("103", where)
