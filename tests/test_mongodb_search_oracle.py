"""The oracle test of tests/test_search_oracle.py on the MongoDB search: random resources
and random searches, answered by the MongoDB search (mongomock, or a real server when
FHIR_FUSION_TEST_MONGODB is set) and by the oracle's in-memory evaluation of the R4
rules, which test_search_oracle.py holds the SQLite index to. Both must find the same
ids, and for `_sort` the same order (missing values last, ties in storage order:
MongoDB's ObjectId, as SQLite's rid).
`_contained=true|both` answers containers; returning contained resources themselves,
or sorting with `_contained`, is not supported on MongoDB: a 400 naming it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mongodb_search_db import MongoSearchDB

from fhir_server.errors import FHIRError
from tests.test_search_oracle import (
    NAMES,
    NUMBERS,
    RESOURCES,
    _full_names,
    _quantities,
    oracle,
    ordered,
    searches,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources=RESOURCES, data=st.data())
def test_mongodb_search_equals_sqlite_and_the_oracle(
    resources: list[dict[str, Any]], data: Any
) -> None:
    types = sorted({resource["resourceType"] for resource in resources})
    numbers = sorted({str(q["value"]) for r in resources for q in _quantities(r)}
                     | {str(p["probabilityDecimal"]) for r in resources
                        for p in r.get("prediction", [])}) or NUMBERS  # fmt: skip
    numbers = [*numbers, "5.40", "0.50", "100", "5"]
    names = sorted({n for r in resources for n in _full_names(r)}) or NAMES
    queries = data.draw(st.lists(searches(types, numbers, names), min_size=2, max_size=8),
                        label="queries")  # fmt: skip
    mongo = MongoSearchDB()
    try:
        for number, resource in enumerate(resources):
            resource["id"] = f"p{number}"
            mongo.add(resource)
        for resource_type, params in queries:
            given = dict(params)
            if given.get("_contained", "false") != "false" and (
                given.get("_containedType") == "contained" or "_sort" in given
            ):
                # not on MongoDB: a 400 naming what it cannot do, never another answer
                with pytest.raises(FHIRError) as caught:
                    mongo.search(resource_type, params)
                name = "_containedType" if given.get("_containedType") == "contained" else "_sort"
                assert caught.value.outcome()["issue"][0]["expression"] == [name]
                continue
            try:
                found = mongo.search(resource_type, params)
            except FHIRError as error:  # pragma: no cover - a failure explains itself
                raise AssertionError(f"{params} gave {error.outcome()}") from None
            expected = oracle(resources, resource_type, params)
            assert set(found) == expected, (resource_type, params)
            assert len(found) == len(expected), params  # a container comes once
            sort = dict(params).get("_sort")
            if sort:
                assert found == ordered(resources, expected, resource_type, sort), params
    finally:
        mongo.close()
