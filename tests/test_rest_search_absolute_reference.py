"""A reference search value may be an absolute URL on this server's base (R4
search.html#reference: "[url]" where the url is this server's base + Type/id matches
the relative reference stored): GET and POST _search, compartments and system search."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from search_graph import RESOURCES

pytestmark = pytest.mark.anyio

BASE = "http://fhir.test/fhir"  # the test client's base URL (conftest)
PETER_OBSERVATIONS = {"obs-1", "obs-5", "obs-6"}


@pytest.fixture
async def graph(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for resource in RESOURCES:
        response = await client.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code == 201, response.text
    return client


def _ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


async def test_get_with_absolute_url_on_own_base(graph: httpx.AsyncClient) -> None:
    relative = await graph.get("Observation", params={"subject": "Patient/pat-peter"})
    absolute = await graph.get("Observation", params={"subject": f"{BASE}/Patient/pat-peter"})
    assert _ids(relative) == PETER_OBSERVATIONS
    assert _ids(absolute) == PETER_OBSERVATIONS


async def test_post_search_with_absolute_url(graph: httpx.AsyncClient) -> None:
    response = await graph.post(
        "Observation/_search", data={"subject": f"{BASE}/Patient/pat-peter"}
    )
    assert _ids(response) == PETER_OBSERVATIONS


async def test_compartment_and_system_search_with_absolute_url(graph: httpx.AsyncClient) -> None:
    compartment = await graph.get(
        "Patient/pat-peter/Observation", params={"subject": f"{BASE}/Patient/pat-peter"}
    )
    assert _ids(compartment) == PETER_OBSERVATIONS
    system = await graph.get(
        BASE, params={"_type": "Observation", "subject": f"{BASE}/Patient/pat-peter"}
    )
    assert _ids(system) == PETER_OBSERVATIONS


async def test_absolute_url_of_another_server_does_not_match(graph: httpx.AsyncClient) -> None:
    other = await graph.get(
        "Observation", params={"subject": "http://elsewhere.test/fhir/Patient/pat-peter"}
    )
    assert _ids(other) == set()
