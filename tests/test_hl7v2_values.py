"""OBX value types, reference ranges and structural errors, on small hand-made messages.

The values follow HL7 v2.5 chapter 2A (SN, CWE, DTM) and chapter 7 (OBX)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from adapters.hl7v2.errors import Hl7Error
from adapters.hl7v2.translate import translate_bytes

HEAD = ("MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240301101530+0100||ORU^R01|M{n}|P|{v}\r"
        "PID|1||P1^^^HOSP^MR||Roe^Ann||19700101|F\r"
        "OBR|1|PL1|FL1^LAB|24323-8^Comprehensive metabolic panel^LN|||20240301090000+0100"
        "||||||||||||||20240301100000+0100|||F\r")


def observation(obx: str, version: str = "2.5.1") -> dict[str, Any]:
    text = HEAD.format(n=1, v=version) + obx + "\r"
    bundle = translate_bytes(text.encode()).bundle
    found: list[dict[str, Any]] = [e["resource"] for e in bundle["entry"]
                                   if e["resource"]["resourceType"] == "Observation"]
    assert len(found) == 1
    return found[0]


def canonical(value: str, unit: str) -> dict[str, Any]:
    """The canonical quantity terminology/standardise.py adds (1.50 mg/dL = 0.0150 g/L)."""
    return {"url": "http://fhir-fusion.org/StructureDefinition/canonical-quantity",
            "valueQuantity": {"value": Decimal(value), "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": unit}}


@pytest.mark.parametrize(
    ("obx", "key", "expected"),
    [
        pytest.param("OBX|1|NM|2345-7^Glucose^LN||1.50|mg/dL^^UCUM|||||F", "valueQuantity",
                     {"value": Decimal("1.50"), "unit": "mg/dL",
                      "system": "http://unitsofmeasure.org", "code": "mg/dL",
                      "extension": [canonical("0.0150", "g/L")]}, id="NM-UCUM"),
        pytest.param("OBX|1|NM|2345-7^Glucose^LN||98|mg/dL|||||F", "valueQuantity",
                     {"value": Decimal("98"), "unit": "mg/dL",
                      "system": "http://unitsofmeasure.org", "code": "mg/dL",
                      "extension": [canonical("0.98", "g/L")]},
                     id="NM-plain-UCUM-unit"),
        pytest.param("OBX|1|NM|2345-7^Glucose^LN||98|MG/DL|||||F", "valueQuantity",
                     {"value": Decimal("98"), "unit": "MG/DL"}, id="NM-not-UCUM"),
        pytest.param("OBX|1|SN|2345-7^Glucose^LN||>^300|mg/dL|||||F", "valueQuantity",
                     {"value": Decimal("300"), "unit": "mg/dL", "comparator": ">",
                      "system": "http://unitsofmeasure.org", "code": "mg/dL",
                      "extension": [canonical("3.00", "g/L")]}, id="SN-comparator"),
        pytest.param("OBX|1|SN|5778-6^Color^LN||^1^:^128||||||F", "valueRatio",
                     {"numerator": {"value": Decimal("1")},
                      "denominator": {"value": Decimal("128")}},
                     id="SN-ratio"),
        pytest.param("OBX|1|SN|2345-7^Glucose^LN||^10^-^20|mg/dL|||||F", "valueRange",
                     {"low": {"value": Decimal("10"), "unit": "mg/dL",
                              "system": "http://unitsofmeasure.org", "code": "mg/dL"},
                      "high": {"value": Decimal("20"), "unit": "mg/dL",
                               "system": "http://unitsofmeasure.org", "code": "mg/dL"}},
                     id="SN-range"),
        pytest.param("OBX|1|ST|8251-1^Service comment^LN||see note||||||F", "valueString",
                     "see note", id="ST"),
        pytest.param("OBX|1|FT|8251-1^Comment^LN||line 1\\.br\\line 2 \\T\\ more||||||F",
                     "valueString", "line 1\nline 2 & more", id="FT-escapes"),
        pytest.param("OBX|1|TX|8251-1^Comment^LN||first~second||||||F", "valueString",
                     "first\nsecond", id="TX-repetitions"),
        pytest.param("OBX|1|CWE|882-1^ABO+Rh group^LN||278149003^Blood group A Rh(D) positive^SCT"
                     "||||||F", "valueCodeableConcept",
                     {"coding": [{"system": "http://snomed.info/sct", "code": "278149003",
                                  "display": "Blood group A Rh(D) positive"}]}, id="CWE"),
        pytest.param("OBX|1|DT|11778-8^Delivery date^LN||20240615||||||F", "valueDateTime",
                     "2024-06-15", id="DT"),
        pytest.param("OBX|1|TS|11778-8^Delivery date^LN||202406151230-0400||||||F",
                     "valueDateTime", "2024-06-15T12:30:00-04:00", id="TS"),
        pytest.param("OBX|1|TM|11778-8^Time^LN||1230||||||F", "valueTime", "12:30:00", id="TM"),
    ],
)
def test_value_by_type(obx: str, key: str, expected: Any) -> None:
    obs = observation(obx)
    assert obs[key] == expected
    assert [k for k in obs if k.startswith("value")] == [key]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.5-5.0", {"low": {"value": Decimal("3.5")}, "high": {"value": Decimal("5.0")},
                     "text": "3.5-5.0"}),
        ("<5", {"high": {"value": Decimal("5")}, "text": "<5"}),
        (">10", {"low": {"value": Decimal("10")}, "text": ">10"}),
        ("negative", {"text": "negative"}),
    ],
)
def test_reference_range(text: str, expected: dict[str, Any]) -> None:
    obs = observation(f"OBX|1|NM|2345-7^Glucose^LN||4|xyz|{text}||||F")
    expected = {k: ({**v, "unit": "xyz"} if isinstance(v, dict) else v)
                for k, v in expected.items()}
    assert obs["referenceRange"] == [expected]


@pytest.mark.parametrize(
    ("flag", "status", "code", "obs_status"),
    [("H", "F", "H", "final"), ("LL", "C", "LL", "corrected"), ("A", "P", "A", "preliminary"),
     ("<", "X", "<", "cancelled"), ("N", "D", "N", "entered-in-error")],
)
def test_interpretation_and_status_tables(flag: str, status: str, code: str,
                                          obs_status: str) -> None:
    obs = observation(f"OBX|1|NM|2345-7^Glucose^LN||4|mg/dL||{flag}|||{status}")
    assert obs["interpretation"][0]["coding"][0]["code"] == code
    assert obs["status"] == obs_status


def test_effective_defaults_to_obr7_and_keeps_obx14() -> None:
    assert observation("OBX|1|NM|2345-7^Glucose^LN||4|mg/dL|||||F")["effectiveDateTime"] == (
        "2024-03-01T09:00:00+01:00")
    obs = observation("OBX|1|NM|2345-7^Glucose^LN||4|mg/dL|||||F|||20240301093000+0100")
    assert obs["effectiveDateTime"] == "2024-03-01T09:30:00+01:00"


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.6", "2.7", "2.8"])
def test_supported_versions(version: str) -> None:
    assert observation("OBX|1|NM|2345-7^Glucose^LN||4|mg/dL|||||F", version)["status"] == "final"


@pytest.mark.parametrize(
    ("message", "ack", "code", "where", "words"),
    [
        ("MSH|^~\\&|A|B|C|D|2024||ORU^R01|M1|P|2.5\rPID|1||1^^^H\r", "AE", "100", "OBR",
         "Required segment OBR is missing"),
        ("MSH|^~\\&|A|B|C|D|2024||ORU^R01|M1|P|2.5\rPID|1||1^^^H\rOBR|1||F1|X^Y^LN\r", "AE",
         "100", "OBX", "Required segment OBX is missing"),
        ("MSH|^~\\&|A|B|C|D|2024||ORU^R01|M1|P|2.5\rOBR|1||F1|X^Y^LN\rOBX|1|NM|A^B^LN||1\r",
         "AE", "100", "OBR", "OBR comes before any PID segment"),
        ("MSH|^~\\&|A|B|C|D|2024|||M1|P|2.5\rPID|1||1^^^H\r", "AE", "101", "MSH-9.1",
         "MSH-9 message type is empty"),
        ("MSH|^~\\&|A|B|C|D|2024||ADT|M1|P|2.5\rPID|1||1^^^H\r", "AE", "101", "MSH-9.2",
         "trigger event is empty"),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A17|M1|P|2.5\rPID|1||1^^^H\r", "AR", "201", "MSH-9.2",
         "ADT event A17 is not supported"),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01|M1|P|2.9\rPID|1||1^^^H\r", "AR", "203", "MSH-12",
         "HL7 version 2.9 is not supported"),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5\rPID|1||1^^^H\r", "AE", "101", "MSH-10",
         "control id is empty"),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01|M1|P|2.5\rPID|1||^^^H||Doe^J\r", "AE", "101", "PID-3",
         "PID-3 patient identifier list is empty"),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A40|M1|P|2.5\rPID|1||1^^^H\r", "AE", "100", "MRG",
         "Required segment MRG is missing"),
        ("MSH|^~\\&|A|B|C|D|2024||ORU^R01|M1|P|2.5\rPID|1||1^^^H\rOBR|1||F1\r"
         "OBX|1|NM|A^B^LN||1\r", "AE", "101", "OBR-4", "OBR-4 universal service identifier"),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01|M1|P|2.5\rPID|1||1^^^H||Doe^J||19991399\r", "AE",
         "102", "PID-7", "not a valid HL7 date"),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01|M1|P|2.5\rPID|1||1^^^H\rpv1|1|I\r", "AE", "100", "#3",
         "Segment 3 has no valid segment id"),
    ],
)
def test_structural_errors(message: str, ack: str, code: str, where: str, words: str) -> None:
    with pytest.raises(Hl7Error, match=words) as info:
        translate_bytes(message.encode())
    error = info.value
    assert (error.ack_code, error.code) == (ack, code)
    assert str(error.location).startswith(where)
    assert "Doe" not in str(error)


ADT = ("MSH|^~\\&|ADT|HOSP|EHR|HOSP|20240301101530+0100||ADT^{event}|E1|P|2.5\r"
       "EVN|{event}|20240301101530+0100\r"
       "PID|1||P9^^^HOSP^MR||Roe^Ann^^^^^L~Smith^Ann^^^^^M||{birth}|F\r"
       "PV1|1|{klass}|W1^12^B^HOSP||||D7^Who^Doc^^^Dr^^^HOSP|||MED|||||||||V55^^^HOSP^VN"
       "|||||||||||||||||||||||||20240228080000+0100|{discharge}\r")


def adt(event: str, klass: str = "I", birth: str = "19700101",
        discharge: str = "") -> list[dict[str, Any]]:
    text = ADT.format(event=event, klass=klass, birth=birth, discharge=discharge)
    return [e["resource"] for e in translate_bytes(text.encode()).bundle["entry"]]


@pytest.mark.parametrize(
    ("event", "status"),
    [("A01", "in-progress"), ("A02", "in-progress"), ("A03", "finished"), ("A04", "arrived"),
     ("A05", "planned"), ("A08", "in-progress"), ("A11", "cancelled"), ("A13", "in-progress")],
)
def test_adt_event_sets_the_encounter_status(event: str, status: str) -> None:
    (encounter,) = [r for r in adt(event) if r["resourceType"] == "Encounter"]
    assert encounter["status"] == status
    assert encounter["identifier"][0] == {
        "system": "urn:fhir-fusion:hl7v2:authority:HOSP", "value": "V55",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                             "code": "VN"}]}}
    assert encounter["period"]["start"] == "2024-02-28T08:00:00+01:00"
    assert encounter["location"] == [{"location": {"display": "W1 12 B (HOSP)"}}]
    assert encounter["participant"][0]["individual"]["display"] == "Dr Doc Who"


def test_a08_with_discharge_time_is_finished() -> None:
    (encounter,) = [r for r in adt("A08", discharge="20240302120000+0100")
                    if r["resourceType"] == "Encounter"]
    assert encounter["status"] == "finished"
    assert encounter["period"]["end"] == "2024-03-02T12:00:00+01:00"


@pytest.mark.parametrize("event", ["A28", "A31"])
def test_person_events_update_the_patient_only(event: str) -> None:
    types = sorted(r["resourceType"] for r in adt(event))
    assert types == ["MessageHeader", "Organization", "Patient"]


@pytest.mark.parametrize(
    ("klass", "code"), [("E", "EMER"), ("I", "IMP"), ("O", "AMB"), ("P", "PRENC")])
def test_patient_class_table_0004(klass: str, code: str) -> None:
    (encounter,) = [r for r in adt("A01", klass=klass) if r["resourceType"] == "Encounter"]
    assert encounter["class"] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code,
        "display": {"EMER": "emergency", "IMP": "inpatient encounter", "AMB": "ambulatory",
                    "PRENC": "pre-admission"}[code]}


@pytest.mark.parametrize(("birth", "expected"), [("1970", "1970"), ("197003", "1970-03"),
                                                  ("19700315", "1970-03-15")])
def test_partial_birth_date_keeps_its_precision(birth: str, expected: str) -> None:
    (patient,) = [r for r in adt("A08", birth=birth) if r["resourceType"] == "Patient"]
    assert patient["birthDate"] == expected
    assert [n["use"] for n in patient["name"]] == ["official", "maiden"]


def test_nm_that_is_not_a_number_is_kept_as_text_with_a_warning() -> None:
    """OBX-2 NM with OBX-5 `abc`: the value is kept (valueString, with a note saying why)
    and the translation carries an HL7 table 0357 code 102 (data type error) at OBX-5,
    for the ACK to report as a warning."""
    text = HEAD.format(n=1, v="2.5.1") + "OBX|1|NM|2345-7^Glucose^LN||abc|mg/dL|||||F\r"
    translation = translate_bytes(text.encode())
    (obs,) = [e["resource"] for e in translation.bundle["entry"]
              if e["resource"]["resourceType"] == "Observation"]
    assert obs["valueString"] == "abc"
    assert "not a number" in obs["note"][0]["text"]
    (warning,) = translation.details["warnings"]
    assert (warning["segment"], warning["occurrence"], warning["field"], warning["code"]) == (
        "OBX", 1, 5, "102")
    assert "abc" not in warning["text"]  # names the field, not the value


def test_numeric_nm_has_no_warning() -> None:
    text = HEAD.format(n=1, v="2.5.1") + "OBX|1|NM|2345-7^Glucose^LN||98|mg/dL|||||F\r"
    assert "warnings" not in translate_bytes(text.encode()).details
