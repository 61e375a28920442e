"""Recorded queries: the exact documents the MongoDB search sends (filters, projections,
sorts, aggregation pipelines, in order), for a representative set of searches.

mongomock answers them in CI (tests/test_mongodb_search*.py check the answers), but it
neither plans queries nor uses indexes; these expectations pin the shape a real
MongoDB receives, so that a change to it is a visible decision: one `$elemMatch` per
parameter on one index array (what the compound multikey indexes of
mongodb_search.INDEXES bound on every field), values ORed as one `$in` or as a
top-level `$or` of `$elemMatch`es (an index union), `_id` seeks for keyset paging, and
the sort keys computed in the pipeline with missing values last.

The calls are recorded by a thin wrapper around the collection (tests/mongo_async.py's
mongomock facade underneath), over the linked resources of tests/search_graph.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from bson import ObjectId
from mongo_async import AsyncMockClient
from mongodb_search_db import document
from search_graph import RESOURCES

from fhir_server.storage import mongodb_search
from fhir_server.storage.base import Context
from search import cursor as cursors
from search.chain import compartment_search
from search.query import SearchQuery, parse_search
from tests.search_index_db import parse_qs

TOP = "\U0010ffff"
PROJECTION = {"_id": 1, "type": 1, "id": 1, "version": 1, "lastUpdated": 1, "deleted": 1,
              "body": 1}  # fmt: skip
WITH_REFERENCES = {**PROJECTION, "idx.rf": 1}
FIRST_PAGE = {"sort": [("_id", 1)], "skip": 0, "limit": 21}  # _count 20, plus one
# An _id from a previous page (the cursor names it; ObjectIds are made by the insert).
LAST_SEEN = ObjectId("6751f0a0c0ffee0000000042")


def live(resource_type: str | None, **more: Any) -> dict[str, Any]:
    """The conditions every search starts with, then `more`."""
    condition: dict[str, Any] = {"tenant": "default"}
    if resource_type is not None:
        condition["type"] = resource_type
    return {**condition, "deleted": {"$ne": True}, **more}


def elem(array: str, **entry: Any) -> dict[str, Any]:
    return {f"idx.{array}": {"$elemMatch": entry}}


def counted_page(where: dict[str, Any], **options: Any) -> list[tuple[Any, ...]]:
    """The total, then the first page, as an unsorted search asks for them."""
    return [("count_documents", where), ("find", where, PROJECTION, {**FIRST_PAGE, **options})]


class _Recorder:
    """A database whose collections record each call before mongomock answers it."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.calls: list[tuple[Any, ...]] = []

    def __getitem__(self, name: str) -> _RecordingCollection:
        return _RecordingCollection(self, self.db[name])


class _RecordingCollection:
    def __init__(self, recorder: _Recorder, collection: Any) -> None:
        self.recorder = recorder
        self.collection = collection

    def find(self, filter: Any = None, projection: Any = None, *, session: Any = None,
             **options: Any) -> Any:  # fmt: skip
        self.recorder.calls.append(("find", filter, projection, options))
        return self.collection.find(filter, projection, session=session, **options)

    async def aggregate(self, pipeline: list[Any], session: Any = None) -> Any:
        self.recorder.calls.append(("aggregate", pipeline))
        return await self.collection.aggregate(pipeline, session=session)

    async def count_documents(self, filter: Any, session: Any = None) -> int:
        self.recorder.calls.append(("count_documents", filter))
        return int(await self.collection.count_documents(filter, session=session))


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[asyncio.AbstractEventLoop, Any]]:
    loop = asyncio.new_event_loop()
    db = AsyncMockClient()["fhir"]
    for resource in RESOURCES:
        loop.run_until_complete(db[mongodb_search.COLLECTION].insert_one(document(resource)))
    yield loop, db
    loop.close()


def _record(
    database: tuple[asyncio.AbstractEventLoop, Any], query: SearchQuery
) -> tuple[list[str], list[tuple[Any, ...]]]:
    loop, db = database
    recorder = _Recorder(db)
    page = loop.run_until_complete(mongodb_search.search(recorder, Context(), query))
    return [stored.id for stored in page.resources], recorder.calls


CASES = [
    pytest.param(
        "Observation", "code=http://loinc.org|718-7,8867-4", {"obs-1", "obs-2", "obs-3", "obs-4"},
        counted_page(live("Observation", **{"$or": [
            elem("tk", p="code", c="718-7", s="http://loinc.org"),
            elem("tk", p="code", c="8867-4"),
        ]})),
        id="token-or-as-union-of-index-ranges",
    ),
    pytest.param(
        "Observation", "code=718-7,8867-4&_total=none", {"obs-1", "obs-2", "obs-3", "obs-4"},
        [("find", live("Observation", **elem("tk", p="code", c={"$in": ["718-7", "8867-4"]})),
          PROJECTION, FIRST_PAGE)],
        id="codes-as-one-in-and-no-count",
    ),
    pytest.param(
        "Patient", "gender:not=male", {"pat-peter", "pat-anna", "pat-smith"},
        counted_page(live("Patient", **{"$nor": [elem("tk", p="gender", c="male")]})),
        id="token-not",
    ),
    pytest.param(
        "Observation", "code:text=hemo", {"obs-1", "obs-3"},
        counted_page(live("Observation", **elem("st", p="code:text",
                                                n={"$gte": "hemo", "$lt": "hemo" + TOP}))),
        id="token-text-on-string-entries",
    ),
    pytest.param(
        "Patient", "birthdate:missing=true", {"pat-peter", "pat-anna", "pat-smith"},
        counted_page(live("Patient", **{"$nor": [elem("dt", p="birthdate")]})),
        id="missing",
    ),
    pytest.param(
        "Patient", "name=Pét&name:exact=Peter", {"pat-peter", "pat-smith"},
        counted_page({"$and": [
            live("Patient", **elem("st", p="name", n={"$gte": "pet", "$lt": "pet" + TOP})),
            elem("st", p="name", n="peter", x="Peter"),
        ]}),
        id="string-starts-with-normalised-and-exact",
    ),
    pytest.param(
        "Patient", "family:contains=a.c", set(),
        [("count_documents", live("Patient", **elem("st", p="family", n={"$regex": "a\\.c"})))],
        id="string-contains-as-literal-regex",
    ),
    pytest.param(
        "Observation", "subject=Patient/pat-peter", {"obs-1", "obs-5", "obs-6"},
        counted_page(live("Observation", **elem("rf", p="subject", i="pat-peter", t="Patient"))),
        id="reference",
    ),
    pytest.param(
        "Patient", "birthdate=ge2010-01-01&birthdate=lt2011", set(),
        [("count_documents", {"$and": [
            live("Patient", **elem("dt", p="birthdate", hi={"$gte": 1262304000000000})),
            elem("dt", p="birthdate", lo={"$lt": 1293840000000000}),
        ]})],
        id="date-range-as-two-entries",
    ),
    pytest.param(
        "RiskAssessment", "probability=0.8,ne0.5", set(),
        [("count_documents", live("RiskAssessment", **{"$or": [
            elem("nm", p="probability", lo={"$gte": 0.75}, hi={"$lt": 0.85}),
            elem("nm", p="probability", **{"$or": [{"lo": {"$lt": 0.45}},
                                                   {"hi": {"$gte": 0.55}}]}),
        ]}))],
        id="number-precision-ranges",
    ),
    pytest.param(
        "Observation", "value-quantity=1|http://unitsofmeasure.org|g/L", set(),
        [("count_documents", live("Observation", **elem(
            "qt", p="value-quantity:canonical", c="kilogram.meter-3",
            v={"$gte": 0.5, "$lt": 1.5})))],
        id="quantity-ucum-canonical",
    ),
    pytest.param(
        "Observation", "component-code-value-quantity=http://loinc.org|8480-6$lt60", set(),
        [("count_documents", live("Observation", **elem(
            "cp", p="component-code-value-quantity", c="8480-6", s="http://loinc.org",
            lo={"$lt": 60.0})))],
        id="composite-in-one-entry",
    ),
    pytest.param(
        "ValueSet", "url:above=http://acme.org/fhir/ValueSet/123&url:below=http://acme.org/",
        set(),
        [("count_documents", {"$and": [
            live("ValueSet", **elem("tk", p="url", c={"$in": [
                "http://acme.org/fhir/ValueSet/123", "http://acme.org/fhir/ValueSet",
                "http://acme.org/fhir", "http://acme.org"]})),
            elem("tk", p="url", c={"$gte": "http://acme.org/", "$lt": "http://acme.org/" + TOP}),
        ]})],
        id="uri-above-and-below",
    ),
    pytest.param(
        "Observation", "_id=obs-1,obs-2&_lastUpdated=gt2026-01-01", {"obs-1", "obs-2"},
        counted_page(live("Observation", id={"$in": ["obs-1", "obs-2"]},
                          lastUpdated={"$gt": "2026-01-01T23:59:59.999999+00:00"})),
        id="id-and-last-updated-on-the-document",
    ),
    pytest.param(
        "Observation", "_count=0&code=718-7", set(),
        [("count_documents", live("Observation", **elem("tk", p="code", c="718-7")))],
        id="count-zero-is-the-total-only",
    ),
    pytest.param(
        "Observation", "subject:Patient.name=peter&_total=none",
        {"obs-1", "obs-3", "obs-5", "obs-6"},
        [
            ("find",
             live("Patient", **elem("st", p="name", n={"$gte": "peter", "$lt": "peter" + TOP})),
             {"_id": 0, "id": 1}, {"limit": mongodb_search.MAX_LINK_IDS + 1}),
            # is any subject a local reference to a contained Patient? (none here)
            ("find", live("Observation", **elem("rf", p="subject", t="Patient",
                                                i={"$gte": "#", "$lt": "#" + TOP})),
             {"_id": 1}, {"limit": 1}),
            ("find", live("Observation", **elem("rf", p="subject", t="Patient",
                                                i={"$in": ["pat-peter", "pat-smith"]})),
             PROJECTION, FIRST_PAGE),
        ],
        id="chain-in-two-steps",
    ),
    pytest.param(
        "Patient", "_has:Observation:patient:code=718-7&_total=none", {"pat-peter", "pat-smith"},
        [
            ("aggregate", [
                {"$match": live("Observation", **elem("tk", p="code", c="718-7"))},
                {"$unwind": "$idx.rf"},
                {"$match": {"idx.rf.p": "patient", "idx.rf.t": "Patient"}},
                {"$group": {"_id": "$idx.rf.i"}},
                {"$limit": mongodb_search.MAX_LINK_IDS + 1},
            ]),
            ("find", live("Patient", id={"$in": ["pat-peter", "pat-smith"]}), PROJECTION,
             FIRST_PAGE),
        ],
        id="has-in-two-steps",
    ),
    pytest.param(
        "Observation",
        "code=718-7&_total=none&_include=Observation:subject&_revinclude=DiagnosticReport:result",
        {"obs-1", "obs-3"},
        [
            ("find", live("Observation", **elem("tk", p="code", c="718-7")), WITH_REFERENCES,
             FIRST_PAGE),
            ("find", live(None, type="Patient", id={"$in": ["pat-peter", "pat-smith"]}),
             WITH_REFERENCES, {"sort": [("_id", 1)]}),
            ("find", live("DiagnosticReport", **elem("rf", p="result",
                                                     i={"$in": ["obs-1", "obs-3"]},
                                                     t="Observation")),
             WITH_REFERENCES, {"sort": [("_id", 1)]}),
        ],
        id="include-and-revinclude-one-query-each",
    ),
    pytest.param(
        None, "_type=Patient,Location&name=peter&_total=none", {"pat-peter", "pat-smith", "loc-1"},
        [("find", live(None, type={"$in": ["Patient", "Location"]}, **{"$or": [
            live("Patient", **elem("st", p="name", n={"$gte": "peter", "$lt": "peter" + TOP})),
            live("Location", **elem("st", p="name", n={"$gte": "peter", "$lt": "peter" + TOP})),
        ]}), PROJECTION, FIRST_PAGE)],
        id="several-types",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("resource_type", "params", "found", "calls"), CASES)
def test_recorded_query_documents(
    database: tuple[asyncio.AbstractEventLoop, Any],
    resource_type: str | None,
    params: str,
    found: set[str],
    calls: list[tuple[Any, ...]],
) -> None:
    ids, recorded = _record(database, parse_search(resource_type, parse_qs(params)))
    assert set(ids) == found
    assert recorded == calls


def test_compartment_is_one_element_match_on_the_references(
    database: tuple[asyncio.AbstractEventLoop, Any],
) -> None:
    query = compartment_search("Patient", "pat-peter", "Observation", [("_total", "none")])
    ids, recorded = _record(database, query)
    codes = ["subject", "performer"]
    assert set(ids) == {"obs-1", "obs-5", "obs-6"}
    assert recorded == [(
        "find",
        live("Observation", **elem("rf", p={"$in": codes}, i="pat-peter", t="Patient")),
        PROJECTION,
        FIRST_PAGE,
    )]


SORT_KEYS = [
    {"$addFields": {
        "k0": {"$map": {"input": {"$filter": {"input": {"$ifNull": ["$idx.dt", []]}, "as": "e",
                                              "cond": {"$eq": ["$$e.p", "birthdate"]}}},
                        "as": "e", "in": "$$e.hi"}},
        "k1": {"$map": {"input": {"$filter": {"input": {"$ifNull": ["$idx.st", []]}, "as": "e",
                                              "cond": {"$eq": ["$$e.p", "name"]}}},
                        "as": "e", "in": "$$e.n"}},
    }},
    # search.html#sort: descending uses a resource's highest value, ascending its lowest
    {"$addFields": {"k0": {"$max": "$k0"}, "k1": {"$min": "$k1"}}},
    {"$addFields": {"m0": {"$cond": [{"$eq": [{"$ifNull": ["$k0", None]}, None]}, 1, 0]},
                    "m1": {"$cond": [{"$eq": [{"$ifNull": ["$k1", None]}, None]}, 1, 0]}}},
]  # fmt: skip
SORT = {"m0": 1, "k0": -1, "m1": 1, "k1": 1, "_id": 1}


def test_sorted_page_after_a_cursor() -> None:
    """Page 2 of _sort=-birthdate,name: the sort keys computed per document, missing
    values last (m0, m1), then the seek past the cursor's values and _id, then the
    sort and one more than the page."""
    query = parse_search("Patient", [("_sort", "-birthdate,name"), ("_count", "2")])
    rid = mongodb_search.cursor_rid(LAST_SEEN)
    cursor = cursors.encode((946684799999999, "chalmers"), rid, query.sort_signature)
    plan = asyncio.run(mongodb_search.plan(None, Context(), query.after(cursor)))
    seek = {"$or": [
        {"$or": [{"m0": 1}, {"k0": {"$lt": 946684799999999}}]},
        {"m0": 0, "k0": 946684799999999, "$or": [{"m1": 1}, {"k1": {"$gt": "chalmers"}}]},
        {"m0": 0, "k0": 946684799999999, "m1": 0, "k1": "chalmers", "_id": {"$gt": LAST_SEEN}},
    ]}  # fmt: skip
    assert plan.pipeline == [
        {"$match": live("Patient")},
        *SORT_KEYS,
        {"$match": seek},
        {"$sort": SORT},
        {"$limit": 3},
        {"$project": {**PROJECTION, "k0": 1, "k1": 1}},
    ]
    sort_stage = next(stage["$sort"] for stage in plan.pipeline if "$sort" in stage)
    assert list(sort_stage) == list(SORT)  # BSON keeps this order: it is the sort order


def test_unsorted_page_after_a_cursor_is_an_id_seek() -> None:
    query = parse_search("Observation", [("code", "718-7"), ("_count", "2")])
    cursor = cursors.encode((), mongodb_search.cursor_rid(LAST_SEEN), query.sort_signature)
    plan = asyncio.run(mongodb_search.plan(None, Context(), query.after(cursor)))
    where = live("Observation", **elem("tk", p="code", c="718-7"))
    assert plan.filter == {**where, "_id": {"$gt": LAST_SEEN}}
    assert plan.count_filter == where
    assert plan.find_arguments() == {
        "filter": plan.filter, "projection": PROJECTION, "sort": [("_id", 1)], "skip": 0,
        "limit": 3,
    }  # fmt: skip


def test_index_specifications() -> None:
    """Each search array has its compound multikey index, tenant and type first."""
    specs = {model.document["name"]: list(model.document["key"].items())
             for model in mongodb_search.INDEXES}  # fmt: skip
    assert specs == {
        "search_page": [("tenant", 1), ("type", 1), ("_id", 1)],
        "search_token": [("tenant", 1), ("type", 1), ("idx.tk.p", 1), ("idx.tk.c", 1),
                         ("idx.tk.s", 1)],
        "search_string": [("tenant", 1), ("type", 1), ("idx.st.p", 1), ("idx.st.n", 1)],
        "search_reference": [("tenant", 1), ("type", 1), ("idx.rf.p", 1), ("idx.rf.i", 1),
                             ("idx.rf.t", 1)],
        "search_date": [("tenant", 1), ("type", 1), ("idx.dt.p", 1), ("idx.dt.lo", 1),
                        ("idx.dt.hi", 1)],
        "search_number": [("tenant", 1), ("type", 1), ("idx.nm.p", 1), ("idx.nm.lo", 1)],
        "search_quantity": [("tenant", 1), ("type", 1), ("idx.qt.p", 1), ("idx.qt.c", 1),
                            ("idx.qt.v", 1)],
        "search_quantity_range": [("tenant", 1), ("type", 1), ("idx.qr.p", 1),
                                  ("idx.qr.c", 1), ("idx.qr.lo", 1)],
        "search_composite": [("tenant", 1), ("type", 1), ("idx.cp.p", 1), ("idx.cp.c", 1),
                             ("idx.cp.vc", 1)],
        "search_contained": [("tenant", 1), ("idx.cn.t", 1)],
    }  # fmt: skip


def test_chain_into_a_contained_resource() -> None:
    """search.html#contained: a chain through a local reference ("#med1") is evaluated
    on the container's `idx.cn` entry of that resource (nested $elemMatch), bounded by
    the container's local reference entry, which the reference index serves; the probe
    before it finds that such references exist."""
    from test_search_contained import RESOURCES as MEDICATIONS

    loop = asyncio.new_event_loop()
    try:
        db = AsyncMockClient()["fhir"]
        request = MEDICATIONS[1]  # mr1, whose medication is its contained #med1
        loop.run_until_complete(db[mongodb_search.COLLECTION].insert_one(document(request)))
        query = parse_search(
            "MedicationRequest", [("medication.ingredient-code", "1191"), ("_total", "none")]
        )
        ids, recorded = _record((loop, db), query)
    finally:
        loop.close()
    local = elem("rf", p="medication", t="Medication", i={"$gte": "#", "$lt": "#" + TOP})
    assert ids == ["mr1"]
    assert recorded == [
        ("find", live("Medication", **elem("tk", p="ingredient-code", c="1191")),
         {"_id": 0, "id": 1}, {"limit": mongodb_search.MAX_LINK_IDS + 1}),
        ("find", live("MedicationRequest", **local), {"_id": 1}, {"limit": 1}),
        ("find", live("MedicationRequest", **local, **{"idx.cn": {"$elemMatch": {
            "via": "medication", "t": "Medication",
            "tk": {"$elemMatch": {"p": "ingredient-code", "c": "1191"}},
        }}}), PROJECTION, FIRST_PAGE),
    ]  # fmt: skip


def test_contained_resources_are_indexed_inside_their_container() -> None:
    from test_search_contained import RESOURCES as MEDICATIONS

    entries = mongodb_search.index_entries(MEDICATIONS[4])  # mr4: contains a and b, uses #a
    assert [(e["t"], e["i"], e["via"]) for e in entries["cn"]] == [
        ("Medication", "a", ["medication"]), ("Medication", "b", []),
    ]  # fmt: skip
    assert {"p": "medication", "t": "Medication", "i": "#a"} in entries["rf"]
    assert entries["cn"][1]["tk"] == [
        {"p": "ingredient-code", "s": "http://www.nlm.nih.gov/research/umls/rxnorm", "c": "1191"}
    ]


@pytest.mark.parametrize("mode", ["true", "both"])
def test_contained_search_finds_containers(mode: str) -> None:
    """_contained=true: the containers (of any type) with a matching contained entry,
    which the search_contained index (tenant, idx.cn.t) bounds; both: or a top-level
    match, in one $or."""
    from test_search_contained import RESOURCES as MEDICATIONS

    loop = asyncio.new_event_loop()
    try:
        db = AsyncMockClient()["fhir"]
        for resource in MEDICATIONS:
            loop.run_until_complete(db[mongodb_search.COLLECTION].insert_one(document(resource)))
        query = parse_search("Medication", [("ingredient-code", "1191"), ("_contained", mode),
                                            ("_total", "none")])  # fmt: skip
        ids, recorded = _record((loop, db), query)
    finally:
        loop.close()
    inside = live(None, **{"idx.cn": {"$elemMatch": {
        "t": "Medication", "tk": {"$elemMatch": {"p": "ingredient-code", "c": "1191"}},
    }}})  # fmt: skip
    top = live("Medication", **elem("tk", p="ingredient-code", c="1191"))
    where = inside if mode == "true" else {"$or": [top, inside]}
    assert ids == (["mr1", "mr4"] if mode == "true" else ["top", "mr1", "mr4"])
    assert recorded == [("find", where, PROJECTION, FIRST_PAGE)]
