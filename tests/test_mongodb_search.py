"""The search tests of the SQLite index, run again on the MongoDB search
(fhir_server/storage/mongodb_search.py) over mongomock, or a real server when
FHIR_FUSION_TEST_MONGODB is set.

The test functions are imported unchanged from tests/test_search_spec_examples.py,
test_search_types.py, test_search_paging.py and test_search_compartment.py: pytest
collects them here, where `db` is a MongoSearchDB (tests/mongodb_search_db.py) holding
the same resources, so the same query must give the same ids on both backends. Tests
that look inside SQLite (EXPLAIN plans, SQL) are not imported; the ones that write
through SQL have a MongoDB twin below.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mongodb_search_db import MongoSearchDB
from search_graph import RESOURCES as GRAPH

import test_search_composite_shapes as shapes
import test_search_paging as paging
import test_search_spec_examples as spec
import test_search_types as types
from fhir_server.errors import FHIRError
from search.query import parse_search
from test_search_compartment import test_compartment_membership_is_always_applied  # noqa: F401
from test_search_composite_shapes import (  # noqa: F401
    test_composite_search,
    test_missing_on_a_coordinate_composite,
)
from test_search_paging import (  # noqa: F401 - collected here, on MongoDB
    test_a_cursor_of_another_sort_is_a_400,
    test_a_tampered_cursor_is_a_400,
    test_count_zero_gives_the_total_only,
    test_cursor_round_trips_through_the_url,
    test_keyset_pages_equal_the_whole_result,
    test_offset_still_works_without_a_cursor,
    test_sort_on_several_keys_missing_last,
    test_total_modes,
)
from test_search_spec_examples import test_spec_example  # noqa: F401
from test_search_types import (  # noqa: F401
    test_date_ap_is_within_ten_percent_of_the_gap_to_now,
    test_injection_through_names,
    test_missing_on_every_type,
    test_values,
)

# Each imported test reads its own module's resources: `db` loads those of the test's
# module, once per module and resource set.
_DATABASES: dict[str, MongoSearchDB] = {}


def _spec_db() -> MongoSearchDB:
    database = MongoSearchDB()
    for patient in spec.PATIENTS:
        database.add_json(patient)
    for month, observation in enumerate(spec.OBSERVATIONS, start=1):
        database.add_json(observation, last_updated=f"2010-{month:02d}-01T12:00:00.000000+00:00")
    for resource in (*spec.RISKS, *spec.VALUE_SETS):
        database.add_json(resource)
    return database


def _types_db() -> MongoSearchDB:
    database = MongoSearchDB()
    for resource in types.RESOURCES:
        database.add_json(resource)
    return database


def _paging_db() -> MongoSearchDB:
    database = MongoSearchDB()
    for person in paging.PEOPLE:
        database.add(paging._patient(*person))  # noqa: SLF001 - the same fixture
    return database


def _graph_db() -> MongoSearchDB:
    database = MongoSearchDB()
    for resource in GRAPH:
        database.add(resource)
    return database


def _shapes_db() -> MongoSearchDB:
    """test_search_composite_shapes' resources: sequences and document relations."""
    database = MongoSearchDB()
    sequence = shapes._sequence  # noqa: SLF001 - the same fixture
    database.add(sequence("s1", "1", "NC_000001.11", (124, 344), [(200, 201)]))
    database.add(sequence("s2", "1", "NC_000001.11", (400, 500), [(410, 411), (480, 481)]))
    database.add(sequence("s3", "2", "NC_000002.12", (124, 344), [(300, 301)]))
    for doc_id, relations in (("d2", [("replaces", "d1"), ("appends", "d0")]),
                              ("d3", [("transforms", "d1")])):  # fmt: skip
        database.add({
            "resourceType": "DocumentReference", "id": doc_id, "status": "current",
            "content": [{"attachment": {"url": f"http://example.org/{doc_id}.pdf"}}],
            "relatesTo": [{"code": code, "target": {"reference": f"DocumentReference/{target}"}}
                          for code, target in relations],
        })  # fmt: skip
    return database


_SHARED = {"test_search_spec_examples": _spec_db, "test_search_types": _types_db}
_FRESH = {
    "test_search_paging": _paging_db,
    "test_search_compartment": _graph_db,
    "test_search_composite_shapes": _shapes_db,
}


@pytest.fixture
def db(request: pytest.FixtureRequest) -> Iterator[MongoSearchDB]:
    """The resources of the imported test's module; read-only sets are shared."""
    module = request.function.__module__
    if module in _SHARED:
        if module not in _DATABASES:
            _DATABASES[module] = _SHARED[module]()
        yield _DATABASES[module]
        return
    database = _FRESH.get(module, MongoSearchDB)()
    try:
        yield database
    finally:
        database.close()


@pytest.fixture(scope="module", autouse=True)
def _close_shared() -> Iterator[None]:
    yield
    for database in _DATABASES.values():
        database.close()
    _DATABASES.clear()


@pytest.mark.parametrize("value", types.INJECTIONS, ids=range(len(types.INJECTIONS)))
@pytest.mark.parametrize(
    "name", ["family", "family:contains", "family:exact", "identifier", "_id", "code:text",
             "subject", "url", "url:below", "url:above"],
)  # fmt: skip
def test_injection_through_values_is_a_plain_value(name: str, value: str) -> None:
    """test_search_types' injection test, counting documents instead of rows: operator
    documents, regular expression syntax and NUL bytes in values are plain values."""
    db = _DATABASES.get("test_search_types") or _DATABASES.setdefault(
        "test_search_types", _types_db()
    )
    resource_type = "ValueSet" if name.startswith("url") else (
        "Observation" if name in ("code:text", "subject") else "Patient"
    )
    try:
        found = db.search(resource_type, [(name, value)])
    except FHIRError as error:
        assert error.status == 400
    else:
        assert found == []
    assert db.count() == len(types.RESOURCES)


def test_contains_takes_regex_characters_literally() -> None:
    db = MongoSearchDB()
    try:
        for pid, family in [("dot", "a.c"), ("abc", "abc"), ("star", "x*y"), ("nul", "n\x00l")]:
            db.add({"resourceType": "Patient", "id": pid, "name": [{"family": family}]})
        assert db.search("Patient", [("family:contains", ".")]) == ["dot"]
        assert db.search("Patient", [("family:contains", "a.c")]) == ["dot"]
        assert db.search("Patient", [("family:contains", "*")]) == ["star"]
        assert db.search("Patient", [("family:contains", "\x00")]) == ["nul"]
        assert db.search("Patient", [("family:contains", "B")]) == ["abc"]
    finally:
        db.close()


def test_paging_neither_skips_nor_repeats_while_others_write() -> None:
    """test_search_paging's twin: resources created and deleted between pages; every
    resource present throughout is seen exactly once, in order."""
    db = _paging_db()
    try:
        query = parse_search("Patient", [("_sort", "family"), ("_count", "2")])
        page = db.page(query)
        seen = list(page.rids)  # b, e
        db.add(paging._patient("new-1", "Aaron", None))  # noqa: SLF001
        db.add(paging._patient("new-2", "Zed", None))  # noqa: SLF001
        db.delete("Patient", "c")
        db.delete("Patient", "b")
        while page.next_cursor is not None:
            query = query.after(page.next_cursor)
            page = db.page(query)
            seen += page.rids
        assert seen == ["b", "e", "a", "g", "f", "new-2", "d", "h"]
    finally:
        db.close()


def test_deleted_documents_are_not_found() -> None:
    db = _paging_db()
    try:
        db.delete("Patient", "a")
        assert db.search("Patient", [("family", "berg")]) == ["c", "g"]
        assert db.search("Patient", [("_id", "a")]) == []
        assert "a" not in db.search("Patient", [("_sort", "-birthdate")])
    finally:
        db.close()


def test_tenants_are_apart() -> None:
    from fhir_server.storage.base import Context
    from mongodb_search_db import document

    db = _paging_db()
    try:
        other = document({"resourceType": "Patient", "id": "z", "name": [{"family": "Berg"}]},
                         tenant="other")  # fmt: skip
        db.run(db.collection.insert_one(other))
        assert db.search("Patient", [("family", "berg")]) == ["a", "c", "g"]
        db.ctx = Context(tenant="other")
        assert db.search("Patient", [("family", "berg")]) == ["z"]
    finally:
        db.close()


def test_unsupported_on_mongodb_is_a_400_naming_the_parameter() -> None:
    """What the MongoDB search cannot do is a 400, never a silent difference:
    `_sort=_score` and `_text` without a full-text index."""
    db = _paging_db()
    try:
        for params, name in [
            ([("_text", "berg")], "_text"),
            ([("_content", "berg")], "_content"),
            ([("_text", "berg"), ("_sort", "_score")], "_text"),
        ]:
            with pytest.raises(FHIRError) as caught:
                db.search("Patient", params)
            (issue,) = caught.value.outcome()["issue"]
            assert caught.value.status == 400
            assert issue["expression"] == [name]
            assert issue["code"] == "not-supported"
    finally:
        db.close()




@pytest.mark.parametrize(
    ("params", "name"),
    [
        ([("subject:Patient.name", "peter")], "subject:Patient.name"),
        ([("_has:Observation:patient:code", "718-7,8867-4,85354-9")],
         "_has:Observation:patient:code"),
    ],
)  # fmt: skip
def test_a_far_side_beyond_the_bound_is_a_400(
    monkeypatch: pytest.MonkeyPatch, params: list[tuple[str, str]], name: str
) -> None:
    """A chain or _has whose far side has more than MAX_LINK_IDS resources would be an
    unbounded $in: a 400 too-costly naming the parameter (SQLite answers it)."""
    from fhir_server.storage import mongodb_search

    db = _graph_db()
    try:
        resource_type = "Patient" if name.startswith("_has") else "Observation"
        assert db.search(resource_type, params)  # within the bound: found
        monkeypatch.setattr(mongodb_search, "MAX_LINK_IDS", 1)
        with pytest.raises(FHIRError) as caught:
            db.search(resource_type, params)
        (issue,) = caught.value.outcome()["issue"]
        assert (caught.value.status, issue["code"]) == (400, "too-costly")
        assert issue["expression"] == [name]
    finally:
        db.close()


def test_quantities_sort_by_their_canonical_value_on_mongodb(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/test_search_sort_quantity.py unchanged, its SearchDB a MongoSearchDB: 150
    mg/dL sorts between 1 and 2 g/L, by the canonical value, as on SQLite."""
    import test_search_sort_quantity as sort_quantity

    opened: list[MongoSearchDB] = []

    def mongo_db(_: Any) -> MongoSearchDB:
        opened.append(MongoSearchDB())
        return opened[-1]

    monkeypatch.setattr(sort_quantity, "SearchDB", mongo_db)
    try:
        sort_quantity.test_quantities_sort_by_their_canonical_value(tmp_path)
    finally:
        for database in opened:
            database.close()
