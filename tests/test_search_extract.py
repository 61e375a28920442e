"""Index extraction: the fast FHIRPath subset against fhirpathpy, and the values per type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conformance.definitions import RESOURCE_TYPES, search_parameters
from fhir_server import jsonutil
from search.extract import extract, extract_with_fhirpathpy, index_key
from search.paths import compile_path, fhirpathpy_expression
from search.values import DATE_MAX, date_range, iso_utc, normalize_text, split_reference

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "fhir"
# FHIR JSON only: one sample is XML, one is Google's HL7v2-as-JSON (no resourceType)
JSON_SAMPLES = sorted(
    path
    for path in SAMPLES.glob("*.json")
    if '"resourceType"' in path.read_bytes().decode("utf-8-sig")
    and not path.read_bytes().decode("utf-8-sig").lstrip().startswith("<")
)


def _resources(path: Path) -> list[dict[str, Any]]:
    data = jsonutil.loads(path.read_bytes().decode("utf-8-sig"))
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        items = [entry.get("resource") for entry in data.get("entry", [])]
    else:
        items = data if isinstance(data, list) else [data]
    return [r for r in items if isinstance(r, dict) and r.get("resourceType") in RESOURCE_TYPES]


def _lab_bundle() -> list[dict[str, Any]]:
    return _resources(SAMPLES / "fhirconverter_LAB-ORU-1-expected.json")


def _by_id(resources: list[dict[str, Any]], resource_id: str) -> dict[str, Any]:
    return next(r for r in resources if r.get("id") == resource_id)


def test_samples_are_present() -> None:
    assert len(JSON_SAMPLES) >= 15


@pytest.mark.parametrize("path", JSON_SAMPLES, ids=lambda p: p.name)
def test_fast_path_matches_fhirpathpy_on_real_samples(path: Path) -> None:
    resources = _resources(path)
    assert resources
    total_rows = 0
    for resource in resources:
        fast = extract(resource)
        slow = extract_with_fhirpathpy(resource)
        label = f"{resource['resourceType']}/{resource.get('id')}"
        assert fast.tokens == slow.tokens, label
        assert fast.strings == slow.strings, label
        assert fast.references == slow.references, label
        assert fast.dates == slow.dates, label
        total_rows += len(fast.tokens) + len(fast.strings) + len(fast.references)
    assert total_rows > len(resources)  # the comparison is not between empty sets


def test_only_a_handful_of_r4_expressions_need_fhirpathpy() -> None:
    slow = set()
    for resource_type in RESOURCE_TYPES:
        for code, param in search_parameters(resource_type).items():
            indexed = param.type in ("token", "string", "reference", "date")
            if indexed and not compile_path(param.expression, resource_type)[1]:
                slow.add(f"{resource_type}.{code}")
    # Bundle.entry[0].resource: an indexer (not in the fast subset)
    assert slow == {"Bundle.composition", "Bundle.message"}


def test_lab_observation_rows() -> None:
    observation = _by_id(_lab_bundle(), "a3d33254-dd17-6444-46af-27da3fad4375")
    rows = extract(observation)
    assert ("Observation.code", "http://loinc.org", "11273-0") in rows.tokens
    status = ("Observation.status", "http://hl7.org/fhir/observation-status", "preliminary")
    assert status in rows.tokens
    assert ("Observation.code:text", "erythrocytes", "ERYTHROCYTES") in rows.strings
    patient = ("Patient", "bab5ca58-f272-4c06-4b3f-f9661e45a22b")
    assert ("Observation.subject", *patient) in rows.references
    assert ("Observation.patient", *patient) in rows.references
    # 2014-10-06T06:27:00+07:00 is 2014-10-05T23:27:00Z, a one-second range
    (low, high) = next((lo, hi) for p, lo, hi in rows.dates if p == "Observation.date")
    assert iso_utc(low) == "2014-10-05T23:27:00.000000+00:00"
    assert iso_utc(high) == "2014-10-05T23:27:00.999999+00:00"


def test_lab_patient_rows() -> None:
    patient = _by_id(_lab_bundle(), "bab5ca58-f272-4c06-4b3f-f9661e45a22b")
    rows = extract(patient)
    mrn = ("Patient.identifier", "http://example.com/v2-to-fhir-converter/Identifier/1", "10006579")
    assert mrn in rows.tokens
    v2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
    assert ("Patient.identifier:of-type", v2_0203, "MR|10006579") in rows.tokens
    assert ("Patient.identifier:of-type", v2_0203, "SB|123121234") in rows.tokens
    assert ("Patient.gender", "http://hl7.org/fhir/administrative-gender", "male") in rows.tokens
    assert ("Patient.deceased", "", "false") in rows.tokens
    assert ("Patient.telecom", "", "8885551212") in rows.tokens
    names = {(v, e) for p, v, e in rows.strings if p == "Patient.name"}
    assert names == {("duck", "DUCK"), ("donald", "DONALD"), ("d", "D")}
    assert ("Patient.address-city", "fowl", "FOWL") in rows.strings
    assert ("Patient.address", "111 duck st", "111 DUCK ST") in rows.strings
    (birth,) = [(lo, hi) for p, lo, hi in rows.dates if p == "Patient.birthdate"]
    assert (iso_utc(birth[0]), iso_utc(birth[1])) == (
        "1924-10-10T00:00:00.000000+00:00",
        "1924-10-10T23:59:59.999999+00:00",
    )


def test_human_name_parts_are_normalised() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [
            {"family": "Müller-Lüdenscheidt", "given": ["  Zoë   Anne "], "prefix": ["Dr."]},
            {"text": "王小明", "family": "王"},
        ],
    }
    values = {v for p, v, _ in extract(patient).strings if p == "Patient.name"}
    assert values == {"muller-ludenscheidt", "zoe anne", "dr.", "王小明", "王"}


def test_codeable_concept_on_the_value_and_tags_and_security() -> None:
    observation = {
        "resourceType": "Observation",
        "meta": {"tag": [{"system": "urn:t", "code": "demo"}], "security": [{"code": "R"}]},
        "valueCodeableConcept": {
            "coding": [{"system": "http://snomed.info/sct", "code": "260385009"}]
        },
        "code": {"text": "Négatif"},
    }
    rows = extract(observation)
    assert ("_tag", "urn:t", "demo") in rows.tokens
    assert ("_security", "", "R") in rows.tokens
    assert ("Observation.value-concept", "http://snomed.info/sct", "260385009") in rows.tokens
    assert ("Observation.code:text", "negatif", "Négatif") in rows.strings


def test_period_with_open_end_runs_to_the_maximum() -> None:
    encounter = {"resourceType": "Encounter", "period": {"start": "2024-03-01"}}
    (row,) = [r for r in extract(encounter).dates if r[0] == "Encounter.date"]
    start = date_range("2024-03-01")
    assert start is not None
    assert row[1:] == (start[0], DATE_MAX)


def test_unknown_type_gives_no_rows() -> None:
    rows = extract({"resourceType": "NotAType", "id": "x"})
    assert not (rows.tokens or rows.strings or rows.references or rows.dates)


def test_index_key_shares_common_parameters_across_types() -> None:
    assert index_key("Observation", "code") == "Observation.code"
    assert index_key("Observation", "_tag") == "_tag"


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        pytest.param("2024", "2024-01-01T00:00:00.000000", "2024-12-31T23:59:59.999999", id="year"),
        pytest.param(
            "2024-02", "2024-02-01T00:00:00.000000", "2024-02-29T23:59:59.999999", id="leap-month"
        ),
        pytest.param(
            "2024-03-01", "2024-03-01T00:00:00.000000", "2024-03-01T23:59:59.999999", id="day"
        ),
        pytest.param(
            "2024-03-01T10:00:00+02:00",
            "2024-03-01T08:00:00.000000",
            "2024-03-01T08:00:00.999999",
            id="offset-to-utc",
        ),
        pytest.param(
            "2024-03-01T10:00:00.25Z",
            "2024-03-01T10:00:00.250000",
            "2024-03-01T10:00:00.259999",
            id="fraction",
        ),
    ],
)
def test_date_ranges_follow_precision(text: str, low: str, high: str) -> None:
    found = date_range(text)
    assert found is not None
    assert (iso_utc(found[0]), iso_utc(found[1])) == (low + "+00:00", high + "+00:00")


@pytest.mark.parametrize("text", ["2024-13", "2024-02-30", "24-01-01", "2024-01-01T25:00:00Z", ""])
def test_invalid_dates_give_none(text: str) -> None:
    assert date_range(text) is None


def test_normalize_text() -> None:
    assert normalize_text("  Élodie\tMÜLLER ") == "elodie muller"
    assert normalize_text("李 小龙") == "李 小龙"


def test_split_reference() -> None:
    assert split_reference("Patient/123") == ("Patient", "123")
    assert split_reference("Patient/123/_history/4") == ("Patient", "123")
    url = "http://ex.org/fhir/Patient/9"
    assert split_reference(url) == ("Patient", url)
    assert split_reference("urn:uuid:5c4619c4") == ("", "urn:uuid:5c4619c4")
    assert split_reference("#contained") is None
    assert split_reference("NotAType/1") is None


def test_fhirpathpy_rewrite_of_resolve_and_as() -> None:
    assert fhirpathpy_expression("(Observation.value as Quantity)", "Observation") == (
        "Observation.value.ofType(Quantity)"
    )
    expression = "Observation.subject.where(resolve() is Patient)"
    rewritten = fhirpathpy_expression(expression, "Observation")
    assert "resolve" not in rewritten and "startsWith('Patient/')" in rewritten


def test_quantity_given_as_python_float_is_indexed_like_its_decimal() -> None:
    """Resources written through the store API from Python (the benchmark generator does)
    carry floats, not the Decimals jsonutil parses; 62.7 must index as 62.7."""
    from decimal import Decimal

    from search.extract import extract

    def quantities(value: object) -> set:
        return extract({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "valueQuantity": {"value": value, "unit": "/min",
                              "system": "http://unitsofmeasure.org", "code": "/min"},
        }).quantities

    assert quantities(62.7) == quantities(Decimal("62.7"))
    assert quantities(62.7)
    assert not quantities(float("nan"))
