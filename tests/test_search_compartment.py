"""Compartment search on the bare index (R4 compartmentdefinition.html#search): the
membership condition is always part of the WHERE, whatever else the query holds, and
the page is driven by the compartment's reference rows, not by a scan of the type."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from search_graph import RESOURCES
from search_index_db import SearchDB

from fhir_server.storage import sqlite_index
from search.chain import compartment_search


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SearchDB]:
    database = SearchDB(tmp_path / "search.db")
    for resource in RESOURCES:
        database.add(resource)
    yield database
    database.conn.close()


def _found(db: SearchDB, patient: str, target: str, params: list[tuple[str, str]]) -> set[str]:
    query = compartment_search("Patient", patient, target, [*params, ("_count", "100")])
    return set(db.ids_of(db.page(query).rids))


@pytest.mark.parametrize(
    ("patient", "target", "params", "expected"),
    [
        ("pat-anna", "Observation", [], {"obs-2"}),
        ("pat-peter", "Observation", [], {"obs-1", "obs-5", "obs-6"}),
        ("pat-peter", "Observation", [("code", "85354-9")], {"obs-5", "obs-6"}),
        ("pat-anna", "Observation", [("code", "85354-9")], set()),
        ("nonexistent", "Observation", [], set()),
        ("nonexistent", "*", [], set()),
        ("pat-anna", "*", [("_type", "Observation")], {"obs-2"}),
        ("pat-anna", "Observation", [("_id", "obs-1")], set()),
    ],
)
def test_compartment_membership_is_always_applied(
    db: SearchDB,
    patient: str,
    target: str,
    params: list[tuple[str, str]],
    expected: set[str],
) -> None:
    assert _found(db, patient, target, params) == expected


def test_compartment_page_is_driven_by_its_references(db: SearchDB) -> None:
    """The plan starts from search_reference's primary key (param, target_id, ...):
    no full scan of the resources table."""
    query = compartment_search("Patient", "pat-peter", "Observation", [("code", "718-7")])
    where, args = sqlite_index._where("default", query)  # noqa: SLF001 - white-box check
    plan = " | ".join(
        str(row[-1])
        for row in db.conn.execute(
            f"EXPLAIN QUERY PLAN SELECT r.rid FROM resources r WHERE {where} ORDER BY r.rid",
            args,
        )
    )
    assert "SEARCH x USING PRIMARY KEY (param=? AND target_id=? AND target_type=?)" in plan
    assert "resources_live (tenant=? AND type=? AND deleted=? AND rowid=?)" in plan, plan
    assert "SCAN" not in plan, plan
