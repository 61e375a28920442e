"""Oversized or out-of-range search input is a 400 OperationOutcome naming the parameter
(search.html#errors), never a 500 from SQLite or from int(); what fits the limits
(search.query MAX_VALUES and friends) compiles and runs, chains included."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from search.query import MAX_INCLUDES, MAX_OFFSET, MAX_PARAMETERS, MAX_VALUES

pytestmark = pytest.mark.anyio


def _values(count: int, prefix: str = "a") -> str:
    return ",".join(f"{prefix}{i}" for i in range(count))


async def _issue(client: httpx.AsyncClient, path: str, params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 400, response.text
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue: dict[str, Any] = outcome["issue"][0]
    return issue


@pytest.mark.parametrize(
    ("params", "expression"),
    [
        pytest.param({"_offset": "99999999999999999999999"}, "_offset", id="huge-offset"),
        pytest.param({"_offset": str(MAX_OFFSET + 1)}, "_offset", id="offset-above-max"),
        pytest.param({"_offset": "-1"}, "_offset", id="negative-offset"),
        pytest.param({"_count": "\u00b2"}, "_count", id="superscript-digit"),
        pytest.param({"_count": "9" * 5000}, "_count", id="too-many-digits"),
        pytest.param({"family": _values(2000)}, "family", id="2000-or-values"),
        pytest.param({"_id": _values(MAX_VALUES + 1)}, "_id", id="id-list"),
        pytest.param({"organization.name": _values(2000)}, "organization.name", id="chain"),
    ],
)
async def test_oversized_or_out_of_range_is_400(
    graph: httpx.AsyncClient, params: dict[str, str], expression: str
) -> None:
    issue = await _issue(graph, "Patient", params)
    assert issue["expression"] == [expression]


async def test_too_many_parameters_is_400(graph: httpx.AsyncClient) -> None:
    params = [("family", f"a{i}") for i in range(MAX_PARAMETERS + 1)]
    issue = await _issue(graph, "Patient", params)
    assert issue["code"] == "too-costly"
    assert issue["expression"] == ["family"]


async def test_too_many_includes_is_400(graph: httpx.AsyncClient) -> None:
    params = [("_include", "Patient:organization")] * (MAX_INCLUDES + 1)
    issue = await _issue(graph, "Patient", params)
    assert issue["expression"] == ["_include"]


async def test_values_within_the_limits_run_even_through_chains(
    graph: httpx.AsyncClient,
) -> None:
    """MAX_VALUES values on each of several parameters, two hops deep: SQLite's
    expression depth (1000) holds because the ORs are a balanced tree."""
    names = [*(_values(MAX_VALUES - 1, "x")).split(","), "Acme Hospital"]
    params = [("subject:Patient.organization.name", ",".join(names))] * 4
    response = await graph.get("Observation", params=[*params, ("_count", "50")])
    assert response.status_code == 200, response.text
    found = {e["resource"]["id"] for e in response.json().get("entry", [])}
    assert found == {"obs-2"}  # pat-anna's, managed by org-acme (Acme Hospital)
