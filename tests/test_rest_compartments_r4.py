"""The four R4 compartments beside Patient (compartmentdefinition.html#search), by their
CompartmentDefinitions: Encounter (Observation: encounter; Encounter: itself),
Practitioner (Encounter: practitioner, participant), RelatedPerson (Encounter:
participant) and Device (Observation: subject, device)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


def _ref(target: str) -> dict[str, str]:
    return {"reference": target}


def _encounter(eid: str, *participants: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "participant": [{"individual": _ref(p)} for p in participants],
    }


def _observation(oid: str, **more: Any) -> dict[str, Any]:
    code = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": code, **more}


# Beside tests/search_graph.py: practitioners, a related person and devices.
EXTRA: list[dict[str, Any]] = [
    {"resourceType": "Practitioner", "id": "prac-1", "name": [{"family": "Careful"}]},
    {"resourceType": "Practitioner", "id": "prac-2", "name": [{"family": "Other"}]},
    {
        "resourceType": "RelatedPerson",
        "id": "rp-1",
        "patient": _ref("Patient/pat-peter"),
    },
    {"resourceType": "Device", "id": "dev-1"},
    {"resourceType": "Device", "id": "dev-2"},
    _encounter("enc-p1", "Practitioner/prac-1"),
    _encounter("enc-p2", "Practitioner/prac-2", "RelatedPerson/rp-1"),
    _encounter("enc-p12", "Practitioner/prac-1", "Practitioner/prac-2"),
    _observation("obs-dev-1", subject=_ref("Device/dev-1")),
    _observation("obs-dev-2", subject=_ref("Patient/pat-smith"), device=_ref("Device/dev-2")),
    _observation(
        "obs-enc-p1", subject=_ref("Patient/pat-smith"), encounter=_ref("Encounter/enc-p1")
    ),
]


@pytest.fixture
async def linked(graph: httpx.AsyncClient) -> httpx.AsyncClient:
    for resource in EXTRA:
        response = await graph.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code == 201, response.text
    return graph


def _matches(bundle: dict[str, Any]) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle["entry"]
        if e["search"]["mode"] == "match"
    }


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        pytest.param("Encounter/enc-1/Observation", {}, {"Observation/obs-1"}, id="encounter"),
        pytest.param("Encounter/enc-2/Observation", {}, {"Observation/obs-2"}, id="encounter-2"),
        pytest.param(
            "Encounter/enc-p1/Observation", {}, {"Observation/obs-enc-p1"}, id="encounter-3"
        ),
        pytest.param(
            "Encounter/enc-1/Observation", {"code": "8867-4"}, set(), id="encounter-and-code"
        ),
        pytest.param("Encounter/enc-2/Encounter", {}, {"Encounter/enc-2"}, id="encounter-itself"),
        pytest.param(
            "Encounter/enc-1/*",
            {},
            {"Encounter/enc-1", "Observation/obs-1"},
            id="encounter-everything",
        ),
        pytest.param(
            "Practitioner/prac-1/Encounter",
            {},
            {"Encounter/enc-p1", "Encounter/enc-p12"},
            id="practitioner",
        ),
        pytest.param(
            "Practitioner/prac-2/Encounter",
            {},
            {"Encounter/enc-p2", "Encounter/enc-p12"},
            id="practitioner-2",
        ),
        pytest.param(
            "RelatedPerson/rp-1/Encounter", {}, {"Encounter/enc-p2"}, id="related-person"
        ),
        pytest.param(
            "Device/dev-1/Observation", {}, {"Observation/obs-dev-1"}, id="device-subject"
        ),
        pytest.param("Device/dev-2/Observation", {}, {"Observation/obs-dev-2"}, id="device-device"),
    ],
)
async def test_compartment_result_sets(
    linked: httpx.AsyncClient, path: str, params: dict[str, str], expected: set[str]
) -> None:
    response = await linked.get(path, params={**params, "_count": "50"})
    assert response.status_code == 200, response.text
    assert _matches(response.json()) == expected


async def test_compartment_search_through_post(linked: httpx.AsyncClient) -> None:
    response = await linked.post("Practitioner/prac-1/Encounter/_search", data={"_id": "enc-p12"})
    assert response.status_code == 200, response.text
    assert _matches(response.json()) == {"Encounter/enc-p12"}


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        pytest.param(
            "Location/loc-1/Observation", 400, "Location is not a compartment type", id="unknown"
        ),
        pytest.param(
            "Encounter/enc-1/Patient",
            400,
            "Patient is not in the Encounter compartment",
            id="type-outside",
        ),
        pytest.param(
            "Device/dev-1/Spaceship", 404, "Unknown resource type", id="unknown-type"
        ),
    ],
)
async def test_bad_compartment_requests(
    linked: httpx.AsyncClient, path: str, status: int, fragment: str
) -> None:
    response = await linked.get(path)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert fragment in outcome["issue"][0]["diagnostics"]
