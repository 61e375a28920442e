"""Compartment search (R4 compartmentdefinition.html#search): `Patient/[id]/[type]` finds
the resources that reference the Patient through a parameter the Patient
CompartmentDefinition lists for that type (Observation: subject, performer; Encounter:
patient; Patient: link)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def _get(client: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    response = await client.get(path, params={**params, "_count": "50"})
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return bundle


def _matches(bundle: dict[str, Any]) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle["entry"]
        if e["search"]["mode"] == "match"
    }


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        pytest.param(
            "Patient/pat-peter/Observation",
            {},
            {"Observation/obs-1", "Observation/obs-5", "Observation/obs-6"},
            id="observations",
        ),
        pytest.param(
            "Patient/pat-peter/Observation",
            {"code": "85354-9"},
            {"Observation/obs-5", "Observation/obs-6"},
            id="with-a-parameter",
        ),
        pytest.param("Patient/pat-peter/Encounter", {}, {"Encounter/enc-1"}, id="encounters"),
        pytest.param(
            "Patient/pat-anna/DiagnosticReport", {}, {"DiagnosticReport/dr-1"}, id="reports"
        ),
        pytest.param("Patient/pat-peter/Patient", {}, {"Patient/pat-anna"}, id="linked-patients"),
        pytest.param(
            "Patient/pat-peter/*",
            {},
            {
                "Observation/obs-1",
                "Observation/obs-5",
                "Observation/obs-6",
                "Encounter/enc-1",
                "Patient/pat-anna",
            },
            id="everything",
        ),
        pytest.param(
            "Patient/pat-peter/*",
            {"_type": "Encounter,Observation"},
            {"Observation/obs-1", "Observation/obs-5", "Observation/obs-6", "Encounter/enc-1"},
            id="everything-of-some-types",
        ),
        pytest.param(
            "Patient/pat-peter/*",
            {"_lastUpdated": "gt2000"},
            {
                "Observation/obs-1",
                "Observation/obs-5",
                "Observation/obs-6",
                "Encounter/enc-1",
                "Patient/pat-anna",
            },
            id="everything-common-param",
        ),
        pytest.param("Patient/nobody/Observation", {}, set(), id="unknown-patient"),
        pytest.param(
            "Patient/pat-peter/Observation",
            {"subject:Patient.name": "anna"},
            set(),
            id="with-a-chain",
        ),
    ],
)
async def test_compartment_result_sets(
    graph: httpx.AsyncClient, path: str, params: dict[str, str], expected: set[str]
) -> None:
    bundle = await _get(graph, path, **params)
    assert _matches(bundle) == expected
    assert bundle["total"] == len(expected)


async def test_compartment_links_name_the_compartment(graph: httpx.AsyncClient) -> None:
    bundle = await _get(graph, "Patient/pat-peter/Observation", code="85354-9")
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links["self"].startswith("http://fhir.test/fhir/Patient/pat-peter/Observation?")
    assert "code=85354-9" in links["self"]


async def test_compartment_with_include(graph: httpx.AsyncClient) -> None:
    bundle = await _get(
        graph, "Patient/pat-peter/Observation", code="718-7", _include="Observation:encounter"
    )
    included = [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert _matches(bundle) == {"Observation/obs-1"}
    assert included == ["enc-1"]


async def test_compartment_does_not_leak_other_patients(graph: httpx.AsyncClient) -> None:
    bundle = await _get(graph, "Patient/pat-anna/Observation")
    assert _matches(bundle) == {"Observation/obs-2"}


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        pytest.param(
            "Organization/org-good/Observation",
            400,
            "Organization is not a compartment type",
            id="not-a-compartment",
        ),
        pytest.param(
            "Patient/pat-peter/Organization",
            400,
            "not in the Patient compartment",
            id="type-outside",
        ),
        pytest.param(
            "Patient/pat-peter/Spaceship", 404, "Unknown resource type", id="unknown-type"
        ),
        pytest.param("Spaceship/1/Observation", 404, "Unknown resource type", id="bad-base"),
    ],
)
async def test_bad_compartment_requests(
    graph: httpx.AsyncClient, path: str, status: int, fragment: str
) -> None:
    response = await graph.get(path)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert fragment in response.json()["issue"][0]["diagnostics"]


async def test_compartment_search_through_post(graph: httpx.AsyncClient) -> None:
    response = await graph.post("Patient/pat-peter/Observation/_search", data={"code": "718-7"})
    assert response.status_code == 200, response.text
    assert _matches(response.json()) == {"Observation/obs-1"}
    everything = await graph.post("Patient/pat-anna/*/_search", data={"_type": "Observation"})
    assert _matches(everything.json()) == {"Observation/obs-2"}


async def test_paging_links_of_a_compartment_search_keep_its_type(
    graph: httpx.AsyncClient,
) -> None:
    """`Patient/[id]/*?_type=Observation` pages through Observations only: its next link
    keeps `_type`, so page 2 is not a page of every type in the compartment."""
    first = (await graph.get("Patient/pat-peter/*", params={"_type": "Observation",
                                                           "_count": "1"})).json()
    assert first["total"] == 3
    seen = {e["resource"]["id"] for e in first["entry"]}
    url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    assert "_type=Observation" in url
    while url:
        page = (await graph.get(url)).json()
        assert page["total"] == 3
        assert {e["resource"]["resourceType"] for e in page["entry"]} == {"Observation"}
        seen |= {e["resource"]["id"] for e in page["entry"]}
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert seen == {"obs-1", "obs-5", "obs-6"}
    unfiltered = (await graph.get("Patient/pat-peter/*", params={"_count": "1"})).json()
    assert not any("_type=" in link["url"] for link in unfiltered["link"])
