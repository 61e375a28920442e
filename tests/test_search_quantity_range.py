"""Range values of quantity parameters (the context-quantity parameters, R4
`useContext.value as Range`), searched like a number Range (search.html#prefix), in
canonical UCUM units too; and the context-type-quantity composite on them. On a bare
SQLite index and on the MongoDB search (tests/mongodb_search_db.py: mongomock behind the
async facade, or a real server with FHIR_FUSION_TEST_MONGODB), which must find the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mongodb_search_db import MongoSearchDB

from tests.search_index_db import SearchDB

UCUM = "http://unitsofmeasure.org"
USAGE = "http://terminology.hl7.org/CodeSystem/usage-context-type"


def _value_set(vs_id: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "ValueSet", "id": vs_id, "status": "active",
            "useContext": [{"code": {"system": USAGE, "code": "age"}, **value}]}  # fmt: skip


def _years(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "a", "system": UCUM, "code": "a"}


@pytest.fixture(params=["sqlite", "mongodb"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SearchDB | MongoSearchDB]:
    index = SearchDB(tmp_path / "index.db") if request.param == "sqlite" else MongoSearchDB()
    index.add_json(_value_set("adults", {"valueRange": {"low": _years(18), "high": _years(65)}}))
    index.add_json(_value_set("seniors", {"valueRange": {"low": _years(65)}}))  # open end
    index.add_json(_value_set("forty", {"valueQuantity": _years(40)}))
    index.add_json({"resourceType": "ValueSet", "id": "none", "status": "active"})
    yield index
    if isinstance(index, MongoSearchDB):
        index.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("40", {"forty"}),  # eq: the range must lie within [39.5, 40.5)
        ("ap40", {"adults", "forty"}),  # ap: overlaps 36-44
        ("gt50", {"adults", "seniors"}),  # the range reaches above 50
        ("lt20", {"adults"}),  # it starts below 20
        ("ge65", {"adults", "seniors"}),
        ("sa60", {"seniors"}),  # starts after 60 (at or above 60.5)
        ("sa66", set()),
        ("eb70", {"adults", "forty"}),  # ends before 69.5
        ("eb65", {"forty"}),  # 65 is not below 64.5
        ("gt40|http://unitsofmeasure.org|a", {"adults", "seniors"}),
        # 600 months = 50 years: canonical units compare across spellings
        ("gt600|http://unitsofmeasure.org|mo", {"adults", "seniors"}),
        ("gt40||a", {"adults", "seniors"}),
    ],
)
def test_ranges_match_like_number_ranges(db: SearchDB | MongoSearchDB, value: str, expected: set[str]) -> None:
    assert set(db.search("ValueSet", [("context-quantity", value)])) == expected


def test_missing_and_not(db: SearchDB | MongoSearchDB) -> None:
    assert db.found("ValueSet", "context-quantity:missing=true") == {"none"}
    assert db.found("ValueSet", "context-quantity:missing=false") == {"adults", "seniors", "forty"}


def test_the_composite_reads_ranges_too(db: SearchDB | MongoSearchDB) -> None:
    found = db.search("ValueSet", [("context-type-quantity", f"{USAGE}|age$gt50")])
    assert set(found) == {"adults", "seniors"}
