"""_contained and _containedType (R4 search.html#contained), and chains evaluated inside
contained resources, through the ASGI app on a real SQLite file; the index side on a
bare SQLite index (tests/search_index_db.py).

The data follow the spec's own illustration: a MedicationRequest with a contained
Medication of a custom formulation, searched by ingredient code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.storage import sqlite_index
from search.query import parse_search
from tests.search_index_db import SearchDB

pytestmark = pytest.mark.anyio

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
BASE = "http://fhir.test/fhir"


def _medication(med_id: str, ingredient: str) -> dict[str, Any]:
    return {
        "resourceType": "Medication",
        "id": med_id,
        "ingredient": [
            {"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": ingredient}]}}
        ],
    }


def _request(request_id: str, medication: str, *contained: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": request_id,
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": medication},
        "subject": {"reference": "Patient/p1"},
    }
    if contained:
        resource["contained"] = list(contained)
    if contained[1:]:  # dom-3: every contained resource is referenced from its container
        resource["supportingInformation"] = [{"reference": f"#{c['id']}"} for c in contained[1:]]
    return resource


# 1191 aspirin, 161 acetaminophen (RxNorm ingredients)
RESOURCES = [
    _medication("top", "1191"),
    _request("mr1", "#med1", _medication("med1", "1191")),
    _request("mr2", "Medication/top"),
    _request("mr3", "#med1", _medication("med1", "161")),
    # two contained Medications with the ingredient: the container still comes once
    _request("mr4", "#a", _medication("a", "1191"), _medication("b", "1191")),
]


@pytest.fixture
async def meds(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for resource in RESOURCES:
        response = await client.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code == 201, response.text
    return client


async def _bundle(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _urls(bundle: dict[str, Any]) -> list[str]:
    return [entry["fullUrl"].removeprefix(BASE + "/") for entry in bundle.get("entry", [])]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({}, {"Medication/top"}, id="default-false"),
        pytest.param({"_contained": "false"}, {"Medication/top"}, id="false"),
        pytest.param(
            {"_contained": "true"}, {"MedicationRequest/mr1", "MedicationRequest/mr4"},
            id="true-container",
        ),
        pytest.param(
            {"_contained": "true", "_containedType": "contained"},
            {"MedicationRequest/mr1#med1", "MedicationRequest/mr4#a", "MedicationRequest/mr4#b"},
            id="true-contained",
        ),
        pytest.param(
            {"_contained": "both"},
            {"Medication/top", "MedicationRequest/mr1", "MedicationRequest/mr4"},
            id="both-container",
        ),
        pytest.param(
            {"_contained": "both", "_containedType": "contained"},
            {"Medication/top", "MedicationRequest/mr1#med1", "MedicationRequest/mr4#a",
             "MedicationRequest/mr4#b"},
            id="both-contained",
        ),
    ],
)  # fmt: skip
async def test_contained_modes(
    meds: httpx.AsyncClient, params: dict[str, str], expected: set[str]
) -> None:
    bundle = await _bundle(meds, "Medication", {"ingredient-code": f"{RXNORM}|1191", **params})
    urls = _urls(bundle)
    assert set(urls) == expected
    assert len(urls) == len(expected)  # each container once
    assert bundle["total"] == len(expected)
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    for name, value in params.items():
        if value != "false":  # the default is left out
            assert f"{name}={value}" in self_link


async def test_a_contained_match_is_the_contained_resource_itself(meds: httpx.AsyncClient) -> None:
    bundle = await _bundle(
        meds, "Medication",
        {"ingredient-code": "161", "_contained": "true", "_containedType": "contained"},
    )  # fmt: skip
    (entry,) = bundle["entry"]
    assert entry["fullUrl"] == f"{BASE}/MedicationRequest/mr3#med1"
    assert entry["resource"] == _medication("med1", "161")
    assert entry["search"]["mode"] == "match"
    container = await _bundle(meds, "Medication", {"ingredient-code": "161", "_contained": "true"})
    (entry,) = container["entry"]
    assert entry["resource"]["resourceType"] == "MedicationRequest"
    assert entry["resource"]["id"] == "mr3"


async def test_a_chain_is_evaluated_inside_contained_resources(meds: httpx.AsyncClient) -> None:
    """search.html#contained: MedicationRequest?medication.ingredient-code=X matches the
    request whose contained Medication has ingredient X, and the one referencing a
    top-level Medication with it; not mr3, whose contained med1 has another."""
    bundle = await _bundle(meds, "MedicationRequest", {"medication.ingredient-code": "1191"})
    assert set(_urls(bundle)) == {
        "MedicationRequest/mr1", "MedicationRequest/mr2", "MedicationRequest/mr4"
    }  # fmt: skip
    bundle = await _bundle(meds, "MedicationRequest", {"medication.ingredient-code": "161"})
    assert _urls(bundle) == ["MedicationRequest/mr3"]
    # mr4 references #a only: its contained b is not what its medication points at
    bundle = await _bundle(
        meds, "MedicationRequest", {"medication:Medication._id": "b"}
    )
    assert _urls(bundle) == []


async def test_contained_rows_follow_their_container(meds: httpx.AsyncClient) -> None:
    """Updating the container re-indexes what it contains; deleting it removes them."""
    query = {"ingredient-code": "1191", "_contained": "true"}
    changed = _request("mr1", "#med1", _medication("med1", "161"))
    assert (await meds.put("MedicationRequest/mr1", json=changed)).status_code == 200
    assert set(_urls(await _bundle(meds, "Medication", query))) == {"MedicationRequest/mr4"}
    assert (await meds.delete("MedicationRequest/mr4")).status_code in (200, 204)
    assert _urls(await _bundle(meds, "Medication", query)) == []
    chained = await _bundle(meds, "MedicationRequest", {"medication.ingredient-code": "161"})
    assert set(_urls(chained)) == {"MedicationRequest/mr1", "MedicationRequest/mr3"}


async def test_paging_through_containers_neither_skips_nor_repeats(
    meds: httpx.AsyncClient,
) -> None:
    seen: list[str] = []
    params: dict[str, str] = {"_contained": "both", "_count": "1", "_sort": "-_lastUpdated"}
    bundle = await _bundle(meds, "Medication", params)
    while True:
        seen += _urls(bundle)
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            break
        response = await meds.get(following[0])
        assert response.status_code == 200, response.text
        bundle = response.json()
    assert sorted(seen) == sorted(
        ["Medication/top", "MedicationRequest/mr1", "MedicationRequest/mr3",
         "MedicationRequest/mr4"]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # contained resources sort by their own local id (a < b < med1 < top)
        pytest.param(
            {"_contained": "true", "_containedType": "contained", "_sort": "_id"},
            ["MedicationRequest/mr4#a", "MedicationRequest/mr4#b", "MedicationRequest/mr1#med1"],
            id="contained-by-id",
        ),
        pytest.param(
            {"_contained": "true", "_containedType": "contained", "_sort": "-_id"},
            ["MedicationRequest/mr1#med1", "MedicationRequest/mr4#b", "MedicationRequest/mr4#a"],
            id="contained-by-id-descending",
        ),
        pytest.param(
            {"_contained": "both", "_containedType": "contained", "_sort": "_id"},
            ["MedicationRequest/mr4#a", "MedicationRequest/mr4#b", "MedicationRequest/mr1#med1",
             "Medication/top"],
            id="both-contained-by-id",
        ),
        # a container by the lowest local id of its matches (mr4: a, mr1: med1) ...
        pytest.param(
            {"_contained": "true", "_sort": "_id"},
            ["MedicationRequest/mr4", "MedicationRequest/mr1"],
            id="containers-by-id",
        ),
        # ... and by the highest, descending (mr1: med1, mr4: b)
        pytest.param(
            {"_contained": "true", "_sort": "-_id"},
            ["MedicationRequest/mr1", "MedicationRequest/mr4"],
            id="containers-by-id-descending",
        ),
        pytest.param(
            {"_contained": "both", "_sort": "_id"},
            ["MedicationRequest/mr4", "MedicationRequest/mr1", "Medication/top"],
            id="both-containers-by-id",
        ),
    ],
)  # fmt: skip
async def test_sorting_with_contained_resources(
    meds: httpx.AsyncClient, params: dict[str, str], expected: list[str]
) -> None:
    """search.html#sort over contained matches: a contained resource sorts by its own
    values, a container by its matching contained resources' (and its own, with both)."""
    bundle = await _bundle(meds, "Medication", {"ingredient-code": f"{RXNORM}|1191", **params})
    assert _urls(bundle) == expected
    assert bundle["total"] == len(expected)


@pytest.mark.parametrize("sort", [None, "_id", "-_lastUpdated"])
async def test_paging_through_contained_resources_neither_skips_nor_repeats(
    meds: httpx.AsyncClient, sort: str | None
) -> None:
    params = {"ingredient-code": "1191", "_contained": "both", "_containedType": "contained",
              "_count": "1"}  # fmt: skip
    if sort:
        params["_sort"] = sort
    bundle = await _bundle(meds, "Medication", params)
    seen: list[str] = []
    while True:
        seen += _urls(bundle)
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            break
        response = await meds.get(following[0])
        assert response.status_code == 200, response.text
        bundle = response.json()
    assert sorted(seen) == ["Medication/top", "MedicationRequest/mr1#med1",
                            "MedicationRequest/mr4#a", "MedicationRequest/mr4#b"]  # fmt: skip


async def test_include_from_contained_resources(meds: httpx.AsyncClient) -> None:
    """_include follows a contained resource's own references (search.html#include);
    _revinclude finds nothing for it: no resource points at a contained one by id."""
    ibuprofen = {**_medication("m9", "5640"), "manufacturer": {"reference": "Organization/o1"}}
    for resource in ({"resourceType": "Organization", "id": "o1", "name": "Maker"},
                     _request("mr9", "#m9", ibuprofen)):  # fmt: skip
        response = await meds.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code == 201, response.text
    bundle = await _bundle(meds, "Medication", {
        "ingredient-code": "5640", "_contained": "true", "_containedType": "contained",
        "_include": "Medication:manufacturer", "_revinclude": "MedicationRequest:medication",
    })  # fmt: skip
    modes = [(e["fullUrl"].removeprefix(BASE + "/"), e["search"]["mode"]) for e in bundle["entry"]]
    assert modes == [("MedicationRequest/mr9#m9", "match"), ("Organization/o1", "include")]


def test_a_chain_looks_into_contained_resources_through_their_own_index(tmp_path: Path) -> None:
    """The chain's contained branch is driven by contained_live (the contained resources
    of the target type), joined to the container's reference rows by rid, and exists only
    when the tenant has contained resources of that type."""
    db = SearchDB(tmp_path / "index.db")
    db.add(_request("plain", "Medication/top"))
    query = parse_search("MedicationRequest", [("medication.ingredient-code", "1191")])
    where, _ = sqlite_index._where("default", query)  # noqa: SLF001 - white-box check
    assert "contained" not in where
    db.add(_request("mr1", "#med1", _medication("med1", "1191")))
    types = sqlite_index.contained_types(db.conn, "default")
    assert types == {"Medication"}
    where, args = sqlite_index._where("default", query, contained=types)  # noqa: SLF001
    sql = f"EXPLAIN QUERY PLAN SELECT r.rid FROM resources r WHERE {where}"
    plan = "\n".join(str(row[-1]) for row in db.conn.execute(sql, args))
    assert "contained_live" in plan, plan
    assert db.search("MedicationRequest", [("medication.ingredient-code", "1191")]) == ["mr1"]
