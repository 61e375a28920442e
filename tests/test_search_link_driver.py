"""Which condition drives a search that combines a chain or `_has` with ordinary
parameters (sqlite_index.links_drive): the one that a bounded count finds more
selective, whichever kind it is; the result set is the same either way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from search_graph import HEMOGLOBIN, RESOURCES
from search_index_db import SearchDB

from fhir_server.storage import sqlite_index
from search.query import parse_search

COMMON = 40  # extra resources that make the ordinary parameter unselective


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SearchDB]:
    database = SearchDB(tmp_path / "search.db")
    for resource in RESOURCES:
        database.add(resource)
    for n in range(COMMON):  # hemoglobin results of a patient named Smith
        database.add(
            {
                "resourceType": "Observation",
                "id": f"obs-hb-{n}",
                "status": "final",
                "code": HEMOGLOBIN,
                "subject": {"reference": "Patient/pat-smith"},
            }
        )
        database.add(
            {"resourceType": "Patient", "id": f"pat-many-{n}", "name": [{"given": ["Peter"]}]}
        )
    yield database
    database.conn.close()


def _both_plans(db: SearchDB, resource_type: str, params: list[tuple[str, str]]) -> set[str]:
    """The matches with the links leading and with the ordinary driver, which must agree."""
    query = parse_search(resource_type, params)
    found = []
    for lead_links in (False, True):
        where, args = sqlite_index._where("default", query, lead_links=lead_links)  # noqa: SLF001
        rows = db.conn.execute(f"SELECT r.rid FROM resources r WHERE {where}", args)
        found.append(set(db.ids_of([row[0] for row in rows])))
    assert found[0] == found[1]
    return found[0]


CASES: list[Any] = [
    # chain selects obs-1, obs-5, obs-6; code=718-7 selects obs-1, obs-3 and COMMON more
    pytest.param(
        "Observation",
        [("code", "718-7"), ("subject:Patient.name", "Chalmers")],
        True,
        {"obs-1"},
        id="selective-chain",
    ),
    # chain selects obs-3 and COMMON more; code=85354-9 only obs-5, obs-6
    pytest.param(
        "Observation",
        [("code", "85354-9"), ("subject:Patient.name", "Smith")],
        False,
        set(),
        id="common-chain",
    ),
    # _has selects pat-peter; name=Peter matches pat-peter, pat-smith and COMMON more
    pytest.param(
        "Patient",
        [("_has:Observation:patient:code", "85354-9"), ("name", "Peter")],
        True,
        {"pat-peter"},
        id="selective-has",
    ),
    # _has selects pat-peter and pat-smith; family=Chalmers only pat-peter
    pytest.param(
        "Patient",
        [("_has:Observation:patient:code", "718-7"), ("family", "Chalmers")],
        False,
        {"pat-peter"},
        id="common-has",
    ),
]


@pytest.mark.parametrize(("resource_type", "params", "links_lead", "expected"), CASES)
def test_the_selective_side_drives_and_results_do_not_change(
    db: SearchDB,
    resource_type: str,
    params: list[tuple[str, str]],
    links_lead: bool,
    expected: set[str],
) -> None:
    query = parse_search(resource_type, params)
    assert sqlite_index.links_drive(db.conn, "default", query) is links_lead
    assert _both_plans(db, resource_type, params) == expected
    assert set(db.search(resource_type, params)) == expected


def test_leading_links_come_before_the_ordinary_probes(db: SearchDB) -> None:
    """With the chain leading, the code is a per-row EXISTS probe, not an IN list."""
    query = parse_search("Observation", [("code", "718-7"), ("subject:Patient.name", "Chalmers")])
    where, _ = sqlite_index._where("default", query, lead_links=True)  # noqa: SLF001
    assert where.index("r.rid IN (") < where.index("EXISTS (SELECT 1 FROM search_token")
    ordinary, _ = sqlite_index._where("default", query)  # noqa: SLF001
    assert "r.rid IN (SELECT rid FROM search_token" in ordinary


@pytest.mark.parametrize(
    "params",
    [
        pytest.param([("code", "718-7"), ("subject:Patient.name", "Chalmers")], id="chain"),
        pytest.param([("_has:Observation:patient:code", "85354-9"), ("name", "Peter")], id="has"),
    ],
)
def test_leading_links_are_the_rid_list_the_plan_starts_from(
    db: SearchDB, params: list[tuple[str, str]]
) -> None:
    """The outer rows are looked up by rid from the link's list (no walk over the type)
    and the ordinary parameter is a correlated per-row probe."""
    resource_type = "Patient" if params[0][0].startswith("_has") else "Observation"
    query = parse_search(resource_type, params)
    where, args = sqlite_index._where("default", query, lead_links=True)  # noqa: SLF001
    plan = [
        str(row[-1])
        for row in db.conn.execute(
            f"EXPLAIN QUERY PLAN SELECT r.rid FROM resources r WHERE {where} ORDER BY r.rid",
            args,
        )
    ]
    assert "resources_live (tenant=? AND type=? AND deleted=? AND rowid=?)" in plan[0], plan
    assert not any("SCAN" in step for step in plan), plan
    assert any(step.startswith("CORRELATED") for step in plan), plan
