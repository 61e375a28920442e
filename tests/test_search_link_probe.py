"""Chains and `_has` with nothing else to drive the search: with an exact total their
list is built once and drives; without one (or with an estimate) a common link is a
per-row check of the type's resources in rid order, a selective one still drives. The
answers are the same either way; on a bare SQLite index (tests/search_index_db.py)."""

from __future__ import annotations

import pytest

from fhir_server.storage import sqlite_index
from search.query import parse_search
from tests.search_index_db import SearchDB

SNOMED = "http://snomed.info/sct"
PATIENTS = 60


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> SearchDB:
    index = SearchDB(tmp_path_factory.mktemp("probe") / "index.db")
    index.conn.execute("BEGIN")
    for n in range(PATIENTS):
        index.add({"resourceType": "Patient", "id": f"p{n}", "name": [{"family": f"F{n % 7}"}]})
    for n in range(1200):  # 1,098 hypertension (over PROBE_LIMIT), 2 asthma, 100 diabetes
        code = "195967001" if n in (1, 2) else "73211009" if n % 12 == 0 else "38341003"
        index.add({
            "resourceType": "Condition", "id": f"c{n}",
            "code": {"coding": [{"system": SNOMED, "code": code}]},
            "subject": {"reference": f"Patient/p{(n * 7) % PATIENTS}"},
        })  # fmt: skip
    index.conn.execute("COMMIT")
    return index


@pytest.mark.parametrize(
    ("params", "dense"),
    [
        ([("_has:Condition:subject:code", "38341003")], True),
        ([("_has:Condition:subject:code", "195967001")], False),
        ([("_has:Condition:subject:code", "38341003"), ("_sort", "-_lastUpdated")], True),
    ],
)
def test_same_matches_whichever_plan(
    db: SearchDB, params: list[tuple[str, str]], dense: bool
) -> None:
    expected = db.search("Patient", params)  # exact total: the list drives
    query = parse_search("Patient", [*params, ("_total", "none")])
    assert sqlite_index.links_drive(db.conn, "default", query) is not dense
    assert db.search("Patient", [*params, ("_total", "none")]) == expected
    paged: list[str] = []
    query = parse_search("Patient", [*params, ("_total", "none"), ("_count", "4")])
    page = db.page(query)
    paged += db.ids_of(page.rids)
    while page.next_cursor is not None:
        page = db.page(query.after(page.next_cursor))
        paged += db.ids_of(page.rids)
    assert paged == expected
    estimate = db.page(parse_search("Patient", [*params, ("_total", "estimate")])).total
    assert estimate == len(expected)  # the type has 60 resources: counted exactly


def test_an_exact_total_keeps_the_list(db: SearchDB) -> None:
    query = parse_search("Patient", [("_has:Condition:subject:code", "38341003")])
    assert sqlite_index.links_drive(db.conn, "default", query)
