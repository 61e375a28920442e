"""_summary and _elements on search results (R4 search.html#summary, #elements): the
element lists come from the isSummary and min flags of the R4 StructureDefinitions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhir_server import shaping

pytestmark = pytest.mark.anyio

SUBSETTED = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED")

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "pat-1",
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">P</div>'},
    "extension": [{"url": "http://example.org/eye-colour", "valueString": "green"}],
    "identifier": [{"system": "urn:mrn", "value": "12345"}],
    "active": True,
    "name": [{"family": "Chalmers", "given": ["Peter"]}],
    "telecom": [{"system": "phone", "value": "(03) 5555 6473"}],
    "gender": "male",
    "birthDate": "1974-12-25",
    "_birthDate": {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "1974-12-25T14:35:45-05:00",
            }
        ]
    },
    "deceasedBoolean": False,
    "address": [{"city": "PleasantVille"}],
    "maritalStatus": {"text": "married"},
    "multipleBirthInteger": 1,
    "contact": [{"name": {"family": "du Marché"}}],
    "communication": [{"language": {"text": "Dutch"}}],
    "generalPractitioner": [{"reference": "Organization/org-1"}],
    "managingOrganization": {"reference": "Organization/org-1"},
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "obs-1",
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">O</div>'},
    "status": "final",
    "category": [{"text": "vital-signs"}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/pat-1"},
    "effectiveDateTime": "2024-03-01T10:00:00Z",
    "valueQuantity": {
        "value": 72,
        "unit": "/min",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    },
    "interpretation": [{"text": "normal"}],
    "note": [{"text": "resting"}],
    "referenceRange": [{"text": "60-100"}],
}


@pytest.fixture
async def stored(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for resource in (PATIENT, OBSERVATION):
        response = await client.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code == 201, response.text
    return client


async def _only(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert len(entries) == 1
    resource: dict[str, Any] = entries[0]["resource"]
    return resource


def _subsetted(resource: dict[str, Any]) -> bool:
    return any((t["system"], t["code"]) == SUBSETTED for t in resource["meta"].get("tag", []))


def test_summary_elements_are_those_of_the_r4_definitions() -> None:
    assert shaping.summary_elements("Patient") == (
        "id",
        "meta",
        "implicitRules",
        "identifier",
        "active",
        "name",
        "telecom",
        "gender",
        "birthDate",
        "deceased[x]",
        "address",
        "managingOrganization",
        "link",
    )
    assert shaping.mandatory_elements("Observation") == ("status", "code")
    assert shaping.mandatory_elements("Patient") == ()


@pytest.mark.parametrize(
    ("path", "params", "keys"),
    [
        pytest.param(
            "Patient",
            {"_summary": "true"},
            {
                "resourceType",
                "id",
                "meta",
                "identifier",
                "active",
                "name",
                "telecom",
                "gender",
                "birthDate",
                "_birthDate",
                "deceasedBoolean",
                "address",
                "managingOrganization",
            },
            id="patient-summary",
        ),
        pytest.param(
            "Observation",
            {"_summary": "true"},
            {
                "resourceType",
                "id",
                "meta",
                "status",
                "code",
                "subject",
                "effectiveDateTime",
                "valueQuantity",
            },
            id="observation-summary",
        ),
        pytest.param(
            "Patient",
            {"_summary": "text"},
            {"resourceType", "id", "meta", "text"},
            id="patient-text",
        ),
        pytest.param(
            "Observation",
            {"_summary": "text"},
            {"resourceType", "id", "meta", "text", "status", "code"},
            id="observation-text-keeps-mandatory",
        ),
        pytest.param(
            "Observation",
            {"_summary": "data"},
            set(OBSERVATION) - {"text"} | {"meta"},
            id="observation-data",
        ),
        pytest.param(
            "Patient",
            {"_elements": "name,birthDate"},
            {"resourceType", "id", "meta", "name", "birthDate", "_birthDate"},
            id="elements",
        ),
        pytest.param(
            "Observation",
            {"_elements": "value"},
            {"resourceType", "id", "meta", "valueQuantity", "status", "code"},
            id="elements-choice-and-mandatory",
        ),
        pytest.param(
            "Patient",
            {"_elements": "deceased[x],gender"},
            {"resourceType", "id", "meta", "deceasedBoolean", "gender"},
            id="elements-choice-with-x",
        ),
    ],
)
async def test_subset_keeps_exactly_these_elements(
    stored: httpx.AsyncClient, path: str, params: dict[str, str], keys: set[str]
) -> None:
    resource = await _only(stored, path, params)
    assert set(resource) == keys
    assert _subsetted(resource)
    assert resource["meta"]["versionId"] == "1"


async def test_summary_false_is_the_whole_resource(stored: httpx.AsyncClient) -> None:
    resource = await _only(stored, "Patient", {"_summary": "false"})
    assert set(resource) == set(PATIENT) | {"meta"}
    assert not _subsetted(resource)


async def test_summary_count_gives_the_total_only(stored: httpx.AsyncClient) -> None:
    response = await stored.get("Observation", params={"_summary": "count"})
    bundle = response.json()
    assert bundle["total"] == 1
    assert "entry" not in bundle
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert "_summary=count" in self_link


async def test_shaping_applies_to_included_resources(stored: httpx.AsyncClient) -> None:
    response = await stored.get(
        "Observation", params={"_include": "Observation:subject", "_summary": "true"}
    )
    entries = response.json()["entry"]
    assert [e["search"]["mode"] for e in entries] == ["match", "include"]
    assert "maritalStatus" not in entries[1]["resource"]
    assert _subsetted(entries[1]["resource"])


async def test_elements_kept_in_links_and_post(stored: httpx.AsyncClient) -> None:
    response = await stored.post("Patient/_search", data={"_elements": "gender"})
    bundle = response.json()
    assert set(bundle["entry"][0]["resource"]) == {"resourceType", "id", "meta", "gender"}
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert "_elements=gender" in self_link


@pytest.mark.parametrize(
    ("name", "value"),
    [("_summary", "yes"), ("_summary", ""), ("_elements", "name.given"), ("_elements", "a;b")],
)
async def test_bad_shaping_values_are_400(stored: httpx.AsyncClient, name: str, value: str) -> None:
    response = await stored.get("Patient", params={name: value})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == [name]


async def test_read_with_summary_and_elements(stored: httpx.AsyncClient) -> None:
    summary = (await stored.get("Patient/pat-1", params={"_summary": "true"})).json()
    assert "contact" not in summary and "text" not in summary
    assert summary["name"] == PATIENT["name"]
    assert _subsetted(summary)
    elements = (await stored.get("Observation/obs-1", params={"_elements": "subject"})).json()
    assert set(elements) == {"resourceType", "id", "meta", "subject", "status", "code"}
    whole = (await stored.get("Patient/pat-1")).json()
    assert set(whole) == set(PATIENT) | {"meta"}
    bad = await stored.get("Patient/pat-1", params={"_summary": "most"})
    assert bad.status_code == 400
    assert bad.json()["issue"][0]["expression"] == ["_summary"]
