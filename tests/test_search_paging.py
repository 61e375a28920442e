"""_sort on several keys, keyset paging with _cursor, _count and _total
(R4 search.html#sort, #count, #total, http.html#paging)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.definitions import search_parameters
from fhir_server.errors import FHIRError
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore
from search.query import SearchQuery, parse_search
from tests.search_index_db import SearchDB

# (id, family, birthDate): families repeat, some patients lack a birth date or a name
PEOPLE = [
    ("a", "Berg", "1990-01-01"),
    ("b", "Adams", "1985-05-05"),
    ("c", "Berg", None),
    ("d", None, "1970-03-03"),
    ("e", "Adams", "1985-05-05"),
    ("f", "Chen", "2001-07-07"),
    ("g", "Berg", "1990-01-01"),
    ("h", None, None),
]


def _patient(pid: str, family: str | None, birth: str | None) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    if family:
        patient["name"] = [{"family": family}]
    if birth:
        patient["birthDate"] = birth
    return patient


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SearchDB]:
    database = SearchDB(tmp_path / "paging.db")
    database.conn.execute("PRAGMA synchronous = OFF")  # a test file: no fsync per row
    for person in PEOPLE:
        database.add(_patient(*person))
    yield database
    database.conn.close()


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        # ties broken by rid (insertion order); patients without the value last
        ("family", ["b", "e", "a", "c", "g", "f", "d", "h"]),
        ("-family", ["f", "a", "c", "g", "b", "e", "d", "h"]),
        ("family,-birthdate", ["b", "e", "a", "g", "c", "f", "d", "h"]),
        ("-birthdate,family", ["f", "a", "g", "b", "e", "d", "c", "h"]),
        ("birthdate,-_id", ["d", "e", "b", "g", "a", "f", "h", "c"]),
        ("_id", ["a", "b", "c", "d", "e", "f", "g", "h"]),
        ("-_id", ["h", "g", "f", "e", "d", "c", "b", "a"]),
    ],
)
def test_sort_on_several_keys_missing_last(db: SearchDB, sort: str, expected: list[str]) -> None:
    assert db.search("Patient", [("_sort", sort)]) == expected


def _walk(db: SearchDB, query: SearchQuery) -> list[str]:
    """Every page of `query` through next_cursor, as one list of ids."""
    seen: list[str] = []
    for _ in range(100):
        page = db.page(query)
        seen += db.ids_of(page.rids)
        if page.next_cursor is None:
            return seen
        query = query.after(page.next_cursor)
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("sort", ["", "family", "-family", "family,-birthdate", "-birthdate,family"])
@pytest.mark.parametrize("count", ["1", "2", "3", "8"])
def test_keyset_pages_equal_the_whole_result(db: SearchDB, sort: str, count: str) -> None:
    params = [("_count", count)] + ([("_sort", sort)] if sort else [])
    whole = db.search("Patient", [("_sort", sort)] if sort else [])
    assert _walk(db, parse_search("Patient", params)) == whole


def test_paging_neither_skips_nor_repeats_while_others_write(db: SearchDB) -> None:
    """Resources created, changed and deleted between pages: every resource present
    throughout is seen exactly once, in order."""
    query = parse_search("Patient", [("_sort", "family"), ("_count", "2")])
    page = db.page(query)
    seen = db.ids_of(page.rids)  # b, e
    # a new first-sorting patient (before the cursor) and one at the end
    db.add(_patient("new-1", "Aaron", None))
    db.add(_patient("new-2", "Zed", None))
    # delete one not yet seen, and one already seen
    db.conn.execute("UPDATE resources SET deleted = 1 WHERE id IN ('c', 'b')")
    while page.next_cursor is not None:
        query = query.after(page.next_cursor)
        page = db.page(query)
        seen += db.ids_of(page.rids)
    assert seen == ["b", "e", "a", "g", "f", "new-2", "d", "h"]


def test_count_zero_gives_the_total_only(db: SearchDB) -> None:
    page = db.page(parse_search("Patient", [("_count", "0"), ("family", "berg")]))
    assert (page.rids, page.total, page.next_cursor) == ([], 3, None)


@pytest.mark.parametrize(("mode", "total"), [("none", None), ("estimate", 3), ("accurate", 3)])
def test_total_modes(db: SearchDB, mode: str, total: int | None) -> None:
    page = db.page(parse_search("Patient", [("_total", mode), ("family", "berg")]))
    assert page.total == total and db.ids_of(page.rids) == ["a", "c", "g"]


def test_offset_still_works_without_a_cursor(db: SearchDB) -> None:
    query = parse_search("Patient", [("_sort", "family"), ("_count", "3"), ("_offset", "3")])
    assert db.ids_of(db.page(query).rids) == ["c", "g", "f"]


def _cursor(db: SearchDB, sort: str) -> str:
    page = db.page(parse_search("Patient", [("_sort", sort), ("_count", "2")]))
    assert page.next_cursor is not None
    return page.next_cursor


def _bad_cursor(params: list[tuple[str, str]]) -> dict[str, Any]:
    with pytest.raises(FHIRError) as caught:
        parse_search("Patient", params)
    assert caught.value.status == 400
    (issue,) = caught.value.outcome()["issue"]
    return dict(issue)


def test_cursor_round_trips_through_the_url(db: SearchDB) -> None:
    cursor = _cursor(db, "-birthdate")
    query = parse_search("Patient", [("_sort", "-birthdate"), ("_count", "2"), ("_cursor", cursor)])
    assert db.ids_of(db.page(query).rids) == ["g", "b"]  # after f, a
    assert ("_cursor", cursor) in query.to_params()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c[:-2],  # cut short
        lambda c: c[:10] + ("A" if c[10] != "A" else "B") + c[11:],  # one character changed
        lambda c: "x",
        lambda c: "!!!!",
        lambda c: c + "'; DROP TABLE resources; --",
        lambda c: base64.urlsafe_b64encode(b'[["Zed"],1]' + bytes(12)).decode(),  # forged
        lambda c: "A" * 5000,
    ],
)
def test_a_tampered_cursor_is_a_400(db: SearchDB, tamper: Any) -> None:
    cursor = tamper(_cursor(db, "family"))
    issue = _bad_cursor([("_sort", "family"), ("_cursor", cursor)])
    assert issue["expression"] == ["_cursor"]
    assert cursor not in issue["diagnostics"]


def test_a_cursor_of_another_sort_is_a_400(db: SearchDB) -> None:
    cursor = _cursor(db, "family")
    assert _bad_cursor([("_sort", "-family"), ("_cursor", cursor)])["expression"] == ["_cursor"]
    assert _bad_cursor([("_cursor", cursor)])["expression"] == ["_cursor"]


def test_cursor_and_offset_together_are_a_400(db: SearchDB) -> None:
    cursor = _cursor(db, "family")
    issue = _bad_cursor([("_sort", "family"), ("_cursor", cursor), ("_offset", "2")])
    assert issue["expression"] == ["_cursor"]


def test_unsorted_deep_page_is_an_index_seek(db: SearchDB) -> None:
    """Without _sort the next page starts at the cursor's rid: a range of the primary
    key, not an OFFSET walk over every earlier row."""
    cursor = db.page(parse_search("Patient", [("_count", "2")])).next_cursor
    query = parse_search("Patient", [("_count", "2")]).after(cursor)
    from fhir_server.storage import sqlite_index

    where, args = sqlite_index._where("default", query)  # noqa: SLF001
    plan = db.conn.execute(
        f"EXPLAIN QUERY PLAN SELECT r.rid FROM resources r WHERE {where} AND r.rid > ? "
        "ORDER BY r.rid LIMIT 3",
        [*args, query.position[1] if query.position else 0],
    ).fetchall()
    text = " ".join(str(row[-1]) for row in plan)
    assert "resources_live (tenant=? AND type=? AND deleted=? AND rowid>?)" in text
    assert "TEMP B-TREE" not in text


@pytest.mark.anyio
async def test_store_search_page_carries_next_cursor(store: SQLiteStore) -> None:
    ctx = Context()
    async with store.transaction(ctx) as tx:
        for person in PEOPLE:
            await tx.create(_patient(*person), resource_id=person[0])
    query = parse_search("Patient", [("_sort", "-family"), ("_count", "3")])
    ids: list[str] = []
    while True:
        page = await store.search(ctx, query)
        ids += [stored.id for stored in page.resources]
        if page.next_cursor is None:
            break
        query = query.after(page.next_cursor)
    assert ids == ["f", "a", "c", "g", "b", "e", "d", "h"]
    assert "birthdate" in search_parameters("Patient")


@pytest.mark.anyio
async def test_next_links_over_http_neither_skip_nor_repeat(
    client: Any, store: SQLiteStore
) -> None:
    """Following Bundle.link next (a _cursor link) while another client writes."""
    ctx = Context()
    async with store.transaction(ctx) as tx:
        for person in PEOPLE:
            await tx.create(_patient(*person), resource_id=person[0])
    response = await client.get("Patient", params={"_sort": "family", "_count": "3"})
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["total"] == 8
    ids = [entry["resource"]["id"] for entry in bundle["entry"]]
    async with store.transaction(ctx) as tx:  # meanwhile: one before the cursor, one deleted
        await tx.create(_patient("x", "Aardvark", None), resource_id="x")
        await tx.delete("Patient", "f")
    while True:
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        if "next" not in links:
            break
        assert "_cursor=" in links["next"] and "_sort=family" in links["next"]
        response = await client.get(links["next"])
        assert response.status_code == 200
        bundle = response.json()
        ids += [entry["resource"]["id"] for entry in bundle.get("entry", [])]
    assert ids == ["b", "e", "a", "c", "g", "d", "h"]


@pytest.mark.anyio
async def test_a_tampered_cursor_over_http_is_a_400(client: Any) -> None:
    response = await client.get("Patient", params={"_cursor": "AAAA' OR 1=1"})
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["_cursor"]
