"""_total=estimate (search.html#total): exact while the driving list is short, else the
driving list's size times the share of its first rows that match; on a bare SQLite
index (tests/search_index_db.py)."""

from __future__ import annotations

import pytest

from fhir_server.storage import sqlite_index
from search.query import parse_search
from tests.search_index_db import SearchDB

LOINC = "http://loinc.org"
COUNT = 3000  # HbA1c Observations, over ESTIMATE_EXACT
STATUSES = ("final", "amended", "preliminary")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> SearchDB:
    index = SearchDB(tmp_path_factory.mktemp("estimate") / "index.db")
    index.conn.execute("BEGIN")
    for n in range(COUNT):
        index.add({
            "resourceType": "Observation", "id": f"o{n}", "status": STATUSES[n % 3],
            "code": {"coding": [{"system": LOINC, "code": "4548-4"}]},
            "subject": {"reference": f"Patient/p{n % 50}"},
        })  # fmt: skip
    for n in range(20):
        index.add({
            "resourceType": "Observation", "id": f"g{n}", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "2345-7"}]},
        })  # fmt: skip
    index.conn.execute("COMMIT")
    return index


def _total(db: SearchDB, params: list[tuple[str, str]]) -> int | None:
    return db.page(parse_search("Observation", params)).total


@pytest.mark.parametrize(
    "params",
    [
        [("code", f"{LOINC}|2345-7")],  # 20 matches: counted
        [("subject", "Patient/p7")],  # 60 matches: counted
        [("code", f"{LOINC}|2345-7"), ("status", "final")],
        [("status:missing", "true")],  # no driving list: counted
    ],
)
def test_an_estimate_is_exact_when_counting_is_cheap(
    db: SearchDB, params: list[tuple[str, str]]
) -> None:
    assert _total(db, [*params, ("_total", "estimate")]) == _total(db, params)


def test_a_large_total_is_estimated_from_the_driving_list(db: SearchDB) -> None:
    """3,000 HbA1c results, a third of them final (every third row): the code's list has
    3,000 rows and 334 of its first 1,000 are final, so the estimate is 1,002 (exact:
    1,000). Without the status every row matches, and the estimate is exact."""
    params = [("code", f"{LOINC}|4548-4"), ("status", "final")]
    assert _total(db, params) == 1000
    assert _total(db, [*params, ("_total", "estimate")]) == round(COUNT * 334 / 1000)
    code_only = [("code", f"{LOINC}|4548-4")]
    assert _total(db, [*code_only, ("_total", "estimate")]) == COUNT
    assert sqlite_index.ESTIMATE_EXACT == 1000


def test_an_estimate_of_a_sparse_match_still_returns_the_matches(db: SearchDB) -> None:
    """The estimate may say 0 while there are matches beyond the sampled rows; the page
    is still searched."""
    params = [("code", f"{LOINC}|4548-4"), ("_id", "o2999"), ("_total", "estimate")]
    page = db.page(parse_search("Observation", params))
    assert db.ids_of(page.rids) == ["o2999"]


def test_estimate_visits_at_most_the_sample(db: SearchDB) -> None:
    """The estimate reads the driving index range and ESTIMATE_EXACT resources: the
    statements it runs are bounded (checked through SQLite's own trace of them)."""
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        _total(db, [("code", f"{LOINC}|4548-4"), ("status", "final"), ("_total", "estimate")])
    finally:
        db.conn.set_trace_callback(None)
    counts = [s for s in statements if s.startswith("SELECT count(*)")]
    assert any("LIMIT" in s and "r.rid IN" in s for s in counts), counts
    assert not any(s.startswith("SELECT COUNT(*) FROM resources r") for s in statements)


def test_the_driver_is_the_clause_with_the_fewest_rows(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """code (1,200 rows) ranks before value-quantity statically; counted, the quantity
    range (5 rows) drives. The answer is the same either way."""
    index = SearchDB(tmp_path_factory.mktemp("driver") / "index.db")
    index.conn.execute("BEGIN")
    for n in range(1200):
        resource = {
            "resourceType": "Observation", "id": f"a{n}", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "4548-4"}]},
            "valueQuantity": {"value": 9 if n % 240 == 0 else 6, "unit": "%",
                              "system": "http://unitsofmeasure.org", "code": "%"},
        }  # fmt: skip
        index.add_json(resource)
    index.conn.execute("COMMIT")
    params = [("code", f"{LOINC}|4548-4"), ("value-quantity", "gt8|http://unitsofmeasure.org|%")]
    query = parse_search("Observation", params)
    chosen = sqlite_index._measured_driver(index.conn, query)  # noqa: SLF001
    assert chosen is not None and chosen.code == "value-quantity"
    assert index.search("Observation", params) == [f"a{n}" for n in range(0, 1200, 240)]
