"""The oracle test of tests/test_search_oracle.py on the MongoDB search: random resources
and random searches, answered by the MongoDB search (mongomock, or a real server when
FHIR_FUSION_TEST_MONGODB is set) and by the oracle's in-memory evaluation of the R4
rules, which test_search_oracle.py holds the SQLite index to. Both must find the same
ids, and for `_sort` the same order (missing values last, ties in storage order:
MongoDB's ObjectId, as SQLite's rid).
`_contained=true|both` with either `_containedType`, sorted or not, is checked in full:
the ids as the oracle finds them and the order too, which for contained resources
returned themselves is storage order on MongoDB (each container, then what it contains
in document order; SQLite's ties among them follow its internal rids instead, which
test_search_oracle.py does not pin)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mongodb_search_db import MongoSearchDB

from fhir_server.errors import FHIRError
from tests.test_search_oracle import (
    _RESULT,
    NAMES,
    NUMBERS,
    RESOURCES,
    _full_names,
    _quantities,
    oracle,
    ordered,
    searches,
    sort_keys,
    units,
)


def contained_order(
    resources: list[dict[str, Any]],
    expected: set[str],
    resource_type: str,
    params: list[tuple[str, str]],
) -> list[str]:
    """The order MongoDB answers a `_contained` search in: the answers in storage order
    (a resource, then its contained resources), stably sorted by their sort keys with
    missing keys last; a container's key is the lowest (highest descending) over its
    matching contained resources and itself."""
    answers: list[str] = []
    for answer, _ in units(resources, params):
        if answer in expected and answer not in answers:
            answers.append(answer)
    sort = dict(params).get("_sort")
    if not sort:
        return answers
    plain = [(n, v) for n, v in params if n not in _RESULT]
    matching = [(a, r) for a, r in units(resources, params)
                if a in expected and r["resourceType"] == resource_type
                and oracle([{**r, "id": a}], resource_type, plain)]  # fmt: skip
    keys = sort_keys(matching, resource_type, sort)
    keyed = [a for a in answers if keys.get(a) is not None]
    keyed.sort(key=lambda a: keys[a], reverse=sort.startswith("-"))  # stable
    return keyed + [a for a in answers if keys.get(a) is None]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources=RESOURCES, data=st.data())
def test_mongodb_search_equals_sqlite_and_the_oracle(
    resources: list[dict[str, Any]], data: Any
) -> None:
    types = sorted({resource["resourceType"] for resource in resources}
                   | ({"Patient"} if any("contained" in r for r in resources) else set()))
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
            try:
                found = mongo.search(resource_type, params)
            except FHIRError as error:  # pragma: no cover - a failure explains itself
                raise AssertionError(f"{params} gave {error.outcome()}") from None
            expected = oracle(resources, resource_type, params)
            assert set(found) == expected, (resource_type, params)
            assert len(found) == len(expected), params  # a container comes once
            sort = dict(params).get("_sort")
            if dict(params).get("_contained", "false") != "false":
                assert found == contained_order(resources, expected, resource_type, params), (
                    params)  # fmt: skip
            elif sort:
                assert found == ordered(resources, expected, resource_type, sort), params
    finally:
        mongo.close()
