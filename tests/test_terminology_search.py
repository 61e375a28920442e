"""Token :in, :not-in, :above and :below answered through the terminology service."""

from __future__ import annotations

import httpx
import pytest
from terminology_backends import store  # noqa: F401 - SQLite and MongoDB (mongomock)

pytestmark = pytest.mark.anyio

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"

HIERARCHY = {
    "resourceType": "CodeSystem", "id": "sct-fragment", "url": SCT, "name": "SCT_fragment",
    "status": "active", "content": "fragment", "hierarchyMeaning": "is-a",
    "concept": [{"code": "235856003", "display": "Disorder of liver", "concept": [
        {"code": "3738000", "display": "Viral hepatitis", "concept": [
            {"code": "66071002", "display": "Viral hepatitis type B"}]}]}],
}  # fmt: skip
VITALS = {
    "resourceType": "ValueSet", "id": "bp", "url": "http://example.org/ValueSet/bp",
    "status": "active", "compose": {"include": [{"system": LOINC, "concept": [
        {"code": "8480-6"}, {"code": "8462-4"}]}]},
}  # fmt: skip


def _condition(cid: str, code: str) -> dict[str, object]:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p"},
            "code": {"coding": [{"system": SCT, "code": code}]}}  # fmt: skip


def _observation(oid: str, code: str) -> dict[str, object]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]}}  # fmt: skip


@pytest.fixture
async def db(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for resource in (
        HIERARCHY, VITALS, _condition("liver", "235856003"), _condition("hep", "3738000"),
        _condition("hepb", "66071002"), _condition("other", "22298006"),
        _observation("sys", "8480-6"), _observation("dia", "8462-4"),
        _observation("glu", "2345-7"),
    ):  # fmt: skip
        r = await client.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
        assert r.status_code == 201, r.text
    return client


async def _ids(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> set[str]:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", [])}


async def test_below_and_above(db: httpx.AsyncClient) -> None:
    assert await _ids(db, "Condition", {"code:below": f"{SCT}|3738000"}) == {"hep", "hepb"}
    assert await _ids(db, "Condition", {"code:below": f"{SCT}|235856003"}) == {
        "liver", "hep", "hepb"}
    assert await _ids(db, "Condition", {"code:above": f"{SCT}|3738000"}) == {"liver", "hep"}


async def test_in_and_not_in(db: httpx.AsyncClient) -> None:
    assert await _ids(db, "Observation", {"code:in": VITALS["url"]}) == {"sys", "dia"}
    assert await _ids(db, "Observation", {"code:not-in": VITALS["url"]}) == {"glu"}
    implicit = f"{SCT}?fhir_vs=isa/3738000"
    assert await _ids(db, "Condition", {"code:in": implicit}) == {"hep", "hepb"}


async def test_bad_terminology_search_is_a_400(db: httpx.AsyncClient) -> None:
    r = await db.get("Observation", params={"code:in": "http://example.org/ValueSet/none"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["code:in"]
    r = await db.get("Condition", params={"code:below": "http://example.org/cs|1"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["code"] == "not-found"
    r = await db.get("Condition", params={"code:below": "3738000"})
    assert r.status_code == 400
