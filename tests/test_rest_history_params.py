"""History paging (R4 http.html#history): `_count=0` asks for the total only (as in
search.html#count) and the self link keeps the _count given."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


def _self_link(bundle: dict[str, Any]) -> str:
    return next(link["url"] for link in bundle["link"] if link["relation"] == "self")


@pytest.mark.parametrize("level", ["instance", "type", "system"])
async def test_history_count_zero_gives_the_total_only(
    client: httpx.AsyncClient, pid: str, level: str
) -> None:
    path = {"instance": f"Patient/{pid}/_history", "type": "Patient/_history",
            "system": "_history"}[level]  # fmt: skip
    response = await client.get(path, params={"_count": "0"})
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["total"] == 2  # the create and the update
    assert bundle.get("entry", []) == []
    assert "_count=0" in _self_link(bundle)
    assert "next" not in {link["relation"] for link in bundle["link"]}


async def test_history_count_of_a_superscript_digit_is_400(
    client: httpx.AsyncClient, pid: str
) -> None:
    response = await client.get("_history", params={"_count": "\u00b2"})
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["_count"]


@pytest.mark.parametrize(("query", "name"), [
    ("_count=2&_count=5", "_count"),
    ("_since=2000-01-01T00:00:00Z&_since=2100-01-01T00:00:00Z", "_since"),
])  # fmt: skip
@pytest.mark.parametrize("level", ["instance", "type", "system"])
async def test_history_parameter_given_twice_is_400_as_in_search(
    client: httpx.AsyncClient, pid: str, level: str, query: str, name: str
) -> None:
    path = {"instance": f"Patient/{pid}/_history", "type": "Patient/_history",
            "system": "_history"}[level]  # fmt: skip
    response = await client.get(f"{path}?{query}")
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [name]
    assert issue["diagnostics"] == f"'{name}' is given more than once"
    if name == "_count":  # the search answer it mirrors
        assert (await client.get(f"Patient?{query}")).status_code == 400


@pytest.mark.parametrize(("path", "query", "name"), [
    ("_history", "_type=Patient&_count=2", "_type"),
    ("Patient/_history", "family=foo", "family"),
    ("Patient/{pid}/_history", "_type=Observation", "_type"),
    ("Patient/_history", "_summary=count", "_summary"),
])  # fmt: skip
async def test_unknown_history_parameter_is_400_when_strict_and_named_when_lenient(
    client: httpx.AsyncClient, pid: str, path: str, query: str, name: str
) -> None:
    url = f"{path.format(pid=pid)}?{query}"
    strict = await client.get(url, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400, strict.text
    assert strict.json()["issue"][0]["expression"] == [name]
    lenient = await client.get(url)
    assert lenient.status_code == 200, lenient.text
    assert lenient.json()["total"] == 2  # what was ignored did not filter
    warning = lenient.headers["warning"]
    assert warning.startswith('299 fhir-fusion "The history parameter ')
    assert f"'{name}' is unknown and was ignored" in warning
    assert "foo" not in warning and "Patient'" not in warning  # names only, no values


async def test_history_with_known_parameters_has_no_warning(
    client: httpx.AsyncClient, pid: str
) -> None:
    response = await client.get("_history", params={"_count": "1"})
    assert response.status_code == 200, response.text
    assert "warning" not in response.headers
