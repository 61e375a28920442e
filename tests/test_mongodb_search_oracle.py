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
from search.query import parse_search
from tests.test_search_oracle import (
    _RESULT,
    NAMES,
    NUMBERS,
    OBSERVATION,
    PATIENT,
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


# Observations that contain Patients (and Patients besides): every search below asks
# for contained resources, so that each draw exercises the MongoDB aggregation.
CONTAINING = st.lists(st.one_of(PATIENT, OBSERVATION), min_size=2, max_size=10)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources=CONTAINING, data=st.data())
def test_contained_searches_on_mongodb_equal_the_oracle(
    resources: list[dict[str, Any]], data: Any
) -> None:
    """`_contained=true|both` with either `_containedType`, with and without `_sort`:
    the oracle's ids in contained_order, and keyset pages of two that add up to the
    same list (a cursor inside a container's contained resources included)."""
    names = sorted({n for r in resources for n in _full_names(r)}) or NAMES
    mongo = MongoSearchDB()
    try:
        for number, resource in enumerate(resources):
            resource["id"] = f"p{number}"
            mongo.add(resource)
        for _ in range(3):
            _, drawn = data.draw(searches(["Patient"], NUMBERS, names), label="search")
            params = [(n, v) for n, v in drawn if n not in ("_contained", "_containedType")]
            if data.draw(st.booleans(), label="unfiltered"):  # every Patient: long lists
                params = [(n, v) for n, v in params if n == "_sort"]
            params += [("_contained", data.draw(st.sampled_from(["true", "both"]))),
                       ("_containedType", data.draw(st.sampled_from(["container", "contained"])))]
            found = mongo.search("Patient", params)
            expected = oracle(resources, "Patient", params)
            assert found == contained_order(resources, expected, "Patient", params), params
            query = parse_search("Patient", [*params, ("_count", "2")])
            page = mongo.page(query)
            walked = list(page.rids)
            while page.next_cursor is not None:
                query = query.after(page.next_cursor)
                page = mongo.page(query)
                walked += page.rids
            assert walked == found, params
    finally:
        mongo.close()
