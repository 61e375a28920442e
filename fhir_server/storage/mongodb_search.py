"""FHIR search on the MongoDB store: the search index kept inside each resource document,
the indexes that serve it, and the compilation of a `SearchQuery` into find/aggregate.

The index holds exactly the values search.extract gives the SQLite index (and the
runtime SearchParameters of search.custom), so one query finds the same ids, in the same
order, on both backends; tests/test_mongodb_search.py runs the SQLite search tests and
the Hypothesis oracle against both.

Document contract (the current-resources collection, `COLLECTION`; one document per
tenant, type and id, as fhir_server/storage/mongodb.py writes it):

    {_id: ObjectId (made at the first write, kept by later ones: the tie-breaker of
           every sort and the position of a keyset cursor, as SQLite's rid),
     tenant, type, id, version: int,
     lastUpdated: "2026-12-04T16:40:00.123456+00:00" (StoredResource.last_updated),
     deleted: bool, body: bytes (jsonutil.dumps of the stored resource),
     idx: index_entries(resource)}   # absent or {} on a delete marker

`idx` has one array per value shape, so each compound multikey index covers only its
own entries; `p` is the parameter code ("code", "subject", "code:text",
"value-quantity:canonical"; the resource type is the document's own `type`):

    tk: {p, s: system, c: code}      token and uri (s "" for none), reference :identifier
    st: {p, n: normalised, x: exact} string, and token :text
    rf: {p, t: target type, i: id}   reference (absolute: t "" or the type, i the URL)
    dt: {p, lo, hi}                  date ranges, integer microseconds, inclusive
    nm: {p, lo, hi}                  numbers (doubles, as SQLite's REAL)
    qt: {p, s, c, v}                 quantities, canonical UCUM under "<code>:canonical"
    qr: {p, s, c, lo, hi}            Range values of quantity parameters (context-quantity),
                                     compared like a number Range, as sqlite_index does
    cp: {p, s, c, vs, vc, lo, hi}    composites (search.extract)
    cn: {t, i, via, lu, tk, st, ...} contained resources (see index_entries)

A condition on one parameter is one `$elemMatch` on one array, so the index
(tenant, type, idx.tk.p, idx.tk.c, idx.tk.s) is bounded on every field it names.

Query shape (the condition documents are built in mongodb_query.py, without I/O; this
module runs them): the clauses are ANDed at the top level of a `find` filter; an unsorted
search reads in `_id` order with `_id > cursor` (a page costs what page 1 costs); a
sorted one is an aggregation that computes each sort key from the entries of its
parameter ($filter, $map, then $min / $max: search.html#sort takes the lowest value
ascending and the highest descending), puts missing values last, and seeks past the
cursor's key values and `_id`, as sqlite_index does.

Chains and `_has` are two steps: the ids on the far side first (bounded by
MAX_LINK_IDS, beyond which the search is a 400 too-costly instead of an unbounded
`$in`), then a condition on the reference entries. `_text` / `_content` go through the
search.fulltext.FullTextIndex given to `search` (Elasticsearch with issue 4): its hits,
bounded by MAX_TEXT_HITS, become an id condition; without an index they are a 400.
`_sort=_score` orders those (at most MAX_TEXT_HITS) matches here, by the index's score.

Contained resources (search.html#contained) are indexed inside their container
(`idx.cn`), so that a chain follows a local reference ("#x") into them as on SQLite,
and `_contained=true|both` finds their containers with one `$elemMatch`. What needs the
contained resources one by one (`_containedType=contained`, which answers them
themselves, and `_sort` with `_contained`, which orders containers by their matching
contained resources) is an aggregation over those containers only: each becomes rows
(mongodb_query.entry_stages: itself, then each contained resource), the matching rows
are kept, sorted (or grouped per container, each sort key its lowest or highest over
the rows) and paged by keyset, a contained row's position being (container `_id`,
position in it).

Known differences from SQLite: chains / `_has` / `_text` whose far side exceeds the
bounds above are a 400 too-costly, and `_text` / `_content` without a full-text index a
400 not-supported. Relevance scores are the full-text index's own
(Elasticsearch's BM25 is not FTS5's), and `_total=estimate` is the exact count. Among
contained resources that tie (unsorted, or equal sort keys) the order is storage order
(container `_id`, then position), where SQLite's follows the negative rids it gives
contained rows when it indexes them (the latest indexed first); the results are the
same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pymongo import ASCENDING, IndexModel

from conformance.definitions import search_parameters
from fhir_server import jsonutil
from fhir_server.errors import FHIRError, Issue
from fhir_server.storage.base import Context, SearchPage, StoredResource
from fhir_server.storage.mongodb_documents import RESOURCES, stored_from_document
from fhir_server.storage.mongodb_query import (
    CONTAINED,
    DOCUMENT,
    ENTRY,
    INDEX_FIELD,
    NOTHING,
    TOP,
    Paths,
    all_of,
    any_of,
    clause_filter,
    cursor_rid,
    document_id,
    entry_after,
    entry_stages,
    in_values,
    missing_flags,
    param_code,
    prefixed,
    seek,
    sort_order,
    sort_spec,
    sort_stages,
    sort_values,
)
from fhir_server.storage.sqlite_contained import resources_of
from fhir_server.storage.sqlite_graph import MAX_INCLUDED
from search import cursor as cursors
from search import custom
from search.chain import ChainClause, CompartmentClause, HasClause, LinkClause, TypedClause
from search.extract import IndexRows, extract, index_key, resolve_local_references
from search.fulltext import FIELD_OF_PARAMETER, FullTextIndex, text_query
from search.query import Clause, SearchQuery
from search.result import MAX_ROUNDS, Include

COLLECTION = RESOURCES
# Far sides of chains and _has, and full-text hits, that a search takes as an id list.
MAX_LINK_IDS = 50_000
MAX_TEXT_HITS = 10_000

# What a search reads of a document (never the index entries, except rf for _include).
_PROJECTION = {
    "_id": 1, "type": 1, "id": 1, "version": 1, "lastUpdated": 1, "deleted": 1, "body": 1
}  # fmt: skip


def _index(name: str, *fields: str) -> IndexModel:
    return IndexModel([(f, ASCENDING) for f in fields], name=name)


def _entries(array: str, *fields: str) -> tuple[str, ...]:
    return tuple(f"{INDEX_FIELD}.{array}.{f}" for f in fields)


# Created at start-up by the store (create_indexes is idempotent for the same names and
# keys). Every search is bounded by tenant and type first.
INDEXES: tuple[IndexModel, ...] = (
    _index("search_page", "tenant", "type", "_id"),
    _index("search_token", "tenant", "type", *_entries("tk", "p", "c", "s")),
    _index("search_string", "tenant", "type", *_entries("st", "p", "n")),
    _index("search_reference", "tenant", "type", *_entries("rf", "p", "i", "t")),
    _index("search_date", "tenant", "type", *_entries("dt", "p", "lo", "hi")),
    _index("search_number", "tenant", "type", *_entries("nm", "p", "lo")),
    _index("search_quantity", "tenant", "type", *_entries("qt", "p", "c", "v")),
    _index("search_quantity_range", "tenant", "type", *_entries("qr", "p", "c", "lo")),
    _index("search_composite", "tenant", "type", *_entries("cp", "p", "c", "vc")),
    # _contained=true|both: the containers of contained resources of a type, any type
    _index("search_contained", "tenant", *_entries("cn", "t")),
)


async def create_indexes(db: Any) -> list[str]:
    """Create INDEXES on the resources collection (idempotent)."""
    return list(await db[COLLECTION].create_indexes(list(INDEXES)))


# -- index entries --------------------------------------------------------------------


def _arrays(rows: IndexRows) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rows.tokens:
        out["tk"] = [{"p": param_code(k), "s": s, "c": c} for k, s, c in sorted(rows.tokens)]
    if rows.strings:
        out["st"] = [{"p": param_code(k), "n": n, "x": x} for k, n, x in sorted(rows.strings)]
    if rows.references:
        out["rf"] = [
            {"p": param_code(k), "t": t, "i": i} for k, t, i in sorted(rows.references)
        ]
    if rows.dates:
        out["dt"] = [{"p": param_code(k), "lo": lo, "hi": hi} for k, lo, hi in sorted(rows.dates)]
    if rows.numbers:
        out["nm"] = [
            {"p": param_code(k), "lo": lo, "hi": hi} for k, lo, hi in sorted(rows.numbers)
        ]
    if rows.quantities:
        out["qt"] = [
            {"p": param_code(k), "s": s, "c": c, "v": v} for k, s, c, v in sorted(rows.quantities)
        ]
    if rows.quantity_ranges:
        out["qr"] = [
            {"p": param_code(k), "s": s, "c": c, "lo": lo, "hi": hi}
            for k, s, c, lo, hi in sorted(rows.quantity_ranges)
        ]
    if rows.composites:
        out["cp"] = [
            {"p": param_code(k), "s": s, "c": c, "vs": vs, "vc": vc, "lo": lo, "hi": hi}
            for k, s, c, vs, vc, lo, hi in sorted(rows.composites, key=repr)
        ]
    return out


def _rows(resource: dict[str, Any]) -> IndexRows:
    """What sqlite_index indexes for a resource (search.extract, then search.custom)."""
    rows = extract(resource)
    custom.add_rows(rows, resource)  # runtime SearchParameters (search.custom)
    resolve_local_references(rows, resource)
    return rows


def index_entries(resource: dict[str, Any]) -> dict[str, Any]:
    """The search index of `resource`, to store as its document's `idx` (only the
    arrays that have entries; replace `idx` as a whole on update).

    Its contained resources (search.html#contained) go under `cn`, each with the same
    arrays plus t (type), i (local id), via (the codes of the container's reference
    parameters that point at it, "#<id>") and lu (the container's meta.lastUpdated),
    so that a chain follows a local reference into it as on SQLite."""
    rows = _rows(resource)
    out = _arrays(rows)
    contained = resources_of(resource)
    if contained:
        meta = resource.get("meta")
        last_updated = meta.get("lastUpdated") if isinstance(meta, dict) else None
        entries = []
        for item in contained:
            local = "#" + item["id"]
            via = sorted({param_code(k) for k, t, i in rows.references
                          if i == local and t == item["resourceType"]})  # fmt: skip
            entry: dict[str, Any] = {"t": item["resourceType"], "i": item["id"], "via": via}
            if isinstance(last_updated, str):
                entry["lu"] = last_updated
            entries.append({**entry, **_arrays(_rows(item))})
        out["cn"] = entries
    return out


# -- the filter of a whole query --------------------------------------------------------


def _too_costly(name: str, diagnostics: str) -> FHIRError:
    return FHIRError(400, [Issue("too-costly", diagnostics, expression=(name,))])


@dataclass(frozen=True)
class _Contained:
    """A search with `_contained=true|both`: the documents to look at (`where`) and the
    rows of entry_stages among them that match (`rows`)."""

    where: dict[str, Any]
    rows: dict[str, Any]


@dataclass
class _Compiler:
    """Compiles queries into filters, running the far sides of chains, `_has` and
    full-text clauses on the way (they become id lists)."""

    db: Any
    ctx: Context
    session: Any = None
    fulltext: FullTextIndex | None = None
    # "Type/id" -> relevance of the first _text/_content clause (for _sort=_score)
    scores: dict[str, float] | None = None

    @property
    def collection(self) -> Any:
        return self.db[COLLECTION]

    def base(self, resource_type: str | None, types: Sequence[str] = ()) -> dict[str, Any]:
        condition: dict[str, Any] = {"tenant": self.ctx.tenant}
        if resource_type is not None:
            condition["type"] = resource_type
        elif len(types) > 1:
            condition["type"] = {"$in": list(types)}
        condition["deleted"] = {"$ne": True}
        return condition

    async def filter(self, query: SearchQuery, paths: Paths = DOCUMENT) -> dict[str, Any]:
        """The filter of `query` on resource documents, or with CONTAINED the condition
        on one contained entry (the far side of a chain through a local reference)."""
        if paths is DOCUMENT:
            conditions = [self.base(query.resource_type, query.types)]
        elif query.resource_type is not None:
            conditions = [{"t": query.resource_type}]
        elif len(query.types) > 1:
            conditions = [{"t": {"$in": list(query.types)}}]
        else:
            conditions = [{"t": {"$exists": True}}]
        for clause in query.clauses:
            if clause.code not in FIELD_OF_PARAMETER:
                conditions.append(clause_filter(clause, paths))
            elif paths is DOCUMENT:
                conditions.append(await self._text_filter(query.resource_type, clause))
            else:  # contained resources have no full-text documents (nor on SQLite)
                conditions.append(NOTHING)
        for link in query.links:
            conditions.append(await self._link_filter(link, paths))
        return all_of(*[c for c in conditions if c])

    async def contained_filter(self, query: SearchQuery) -> _Contained:
        """`_contained=true|both` (search.html#contained): the filter of the resources
        that contain a match, and with `both` the top-level matches too (each document
        once, whatever its own type), and the conditions that pick the matching rows
        of entry_stages (a resource itself, or one of its contained resources)."""
        element = await self.filter(query, CONTAINED)
        inside = all_of(self.base(None), {f"{INDEX_FIELD}.cn": {"$elemMatch": element}})
        rows = [all_of({"n": {"$gt": 0}}, prefixed(element, ENTRY + "."))]
        if query.result.contained == "true":
            return _Contained(inside, rows[0])
        itself = await self.filter(query)
        rows.insert(0, all_of({"n": 0}, itself))
        return _Contained({"$or": [itself, inside]}, {"$or": rows})

    async def _ids(self, name: str, query: SearchQuery) -> list[str]:
        """The ids matching `query` (the far side of a chain), at most MAX_LINK_IDS."""
        cursor = self.collection.find(
            await self.filter(query), {"_id": 0, "id": 1}, limit=MAX_LINK_IDS + 1,
            session=self.session,
        )  # fmt: skip
        ids = [doc["id"] for doc in await cursor.to_list(None)]
        if len(ids) > MAX_LINK_IDS:
            raise _too_costly(name, f"'{name}' matches more than {MAX_LINK_IDS} resources on "
                              "the far side; add a more selective condition")  # fmt: skip
        return sorted(ids)

    async def _referenced(self, link: HasClause) -> list[str]:
        """The ids of link.target_type that the referrers of `_has` point at."""
        entry = f"{INDEX_FIELD}.rf"
        pipeline = [
            {"$match": await self.filter(link.referrers)},
            {"$unwind": "$" + entry},
            {"$match": {f"{entry}.p": param_code(link.key), f"{entry}.t": link.target_type}},
            {"$group": {"_id": f"${entry}.i"}},
            {"$limit": MAX_LINK_IDS + 1},
        ]
        cursor = await self.collection.aggregate(pipeline, session=self.session)
        ids = [doc["_id"] for doc in await cursor.to_list(None)]
        if len(ids) > MAX_LINK_IDS:
            raise _too_costly(link.name, f"'{link.name}' reaches more than {MAX_LINK_IDS} "
                              "resources; add a more selective condition")  # fmt: skip
        return sorted(ids)

    async def _link_filter(self, link: LinkClause, paths: Paths) -> dict[str, Any]:
        entries = f"{paths.index}rf"
        if isinstance(link, ChainClause):
            conditions = []
            code = param_code(link.key)
            for target_type, inner in link.targets:
                ids = await self._ids(link.name, inner)
                if ids:
                    element = {"p": code, "t": target_type, "i": in_values(ids)}
                    conditions.append({entries: {"$elemMatch": element}})
                if paths is DOCUMENT:
                    inside = await self._contained_branch(link, target_type, inner)
                    if inside is not None:
                        conditions.append(inside)
            return any_of(conditions) if conditions else NOTHING
        if isinstance(link, HasClause):
            ids = await self._referenced(link)
            return {paths.id: in_values(ids)} if ids else NOTHING
        if isinstance(link, CompartmentClause):
            codes = [param_code(key) for key in link.keys]
            element = {
                "p": codes[0] if len(codes) == 1 else {"$in": codes},
                "i": link.compartment_id,
                "t": link.compartment_type,
            }
            return {entries: {"$elemMatch": element}}
        if isinstance(link, TypedClause) and paths is DOCUMENT:
            alternatives = [await self.filter(inner) for _, inner in link.alternatives]
            return any_of(alternatives) if alternatives else NOTHING
        raise TypeError(f"unknown link clause {type(link).__name__}")

    async def _contained_branch(
        self, link: ChainClause, target_type: str, inner: SearchQuery
    ) -> dict[str, Any] | None:
        """The chain evaluated inside the resources' own contained resources of
        `target_type` that the chained parameter points at ("#x"; search.html#contained),
        as sqlite_contained.chain_branch does. None when no resource of the type has
        such a local reference (one index probe): the branch could match nothing."""
        code = param_code(link.key)
        local = {f"{INDEX_FIELD}.rf": {"$elemMatch": {
            "p": code, "t": target_type, "i": {"$gte": "#", "$lt": "#" + TOP},
        }}}  # fmt: skip
        searched = link.key.partition(".")[0]
        probe = self.collection.find(
            all_of(self.base(searched), local), {"_id": 1}, limit=1, session=self.session
        )
        if not await probe.to_list(1):
            return None
        element = all_of({"via": code}, await self.filter(inner, CONTAINED))
        return all_of(local, {f"{INDEX_FIELD}.cn": {"$elemMatch": element}})

    async def _text_filter(self, resource_type: str | None, clause: Clause) -> dict[str, Any]:
        """_text / _content through the full-text index: its hits as an id condition."""
        if self.fulltext is None:
            raise FHIRError(400, [Issue(
                "not-supported",
                f"'{clause.code}' needs a full-text search index, and this MongoDB store has "
                "none configured",
                expression=(clause.code,),
            )])  # fmt: skip
        text = text_query(FIELD_OF_PARAMETER[clause.code], [t.text for t in clause.terms])
        hits = await self.fulltext.query(
            self.ctx.tenant, text, resource_type, limit=MAX_TEXT_HITS + 1
        )
        if len(hits) > MAX_TEXT_HITS:
            raise _too_costly(clause.code, f"'{clause.code}' matches more than {MAX_TEXT_HITS} "
                              "resources; add words or other parameters")  # fmt: skip
        if self.scores is None:
            self.scores = {f"{hit.resource_type}/{hit.id}": hit.score for hit in hits}
        by_type: dict[str, list[str]] = {}
        for hit in hits:
            if resource_type is None or hit.resource_type == resource_type:
                by_type.setdefault(hit.resource_type, []).append(hit.id)
        if resource_type is not None:
            ids = by_type.get(resource_type, [])
            return {"id": in_values(sorted(set(ids)))} if ids else NOTHING
        alternatives = [
            {"type": t, "id": in_values(sorted(set(ids)))} for t, ids in by_type.items()
        ]
        return any_of(alternatives) if alternatives else NOTHING


@dataclass(frozen=True)
class Plan:
    """The compiled page query: a find (`pipeline` None) or an aggregation, and the
    count of the total (`count_filter`, or the aggregation `count_pipeline`; both None
    for _total=none). `rows` says what the aggregation yields: resource documents,
    "containers" (_id and sort keys of each, the documents read after) or "entries"
    (rows of mongodb_query.entry_stages: resources and contained resources)."""

    filter: dict[str, Any]
    count_filter: dict[str, Any] | None
    sort: dict[str, int]
    skip: int
    limit: int
    pipeline: list[dict[str, Any]] | None = None
    count_pipeline: list[dict[str, Any]] | None = None
    rows: str = "documents"

    def find_arguments(self) -> dict[str, Any]:
        return {"filter": self.filter, "projection": _PROJECTION, "sort": list(self.sort.items()),
                "skip": self.skip, "limit": self.limit}  # fmt: skip


async def plan(
    db: Any,
    ctx: Context,
    query: SearchQuery,
    *,
    session: Any = None,
    fulltext: FullTextIndex | None = None,
) -> Plan:
    """The MongoDB query documents for one page of `query` (running the far sides of
    chains, `_has` and `_text` first: their ids are part of the filter)."""
    return await _plan(_Compiler(db, ctx, session, fulltext), query)


def _keys(sorts: Sequence[Any]) -> dict[str, int]:
    return {f"k{i}": 1 for i in range(len(sorts))}


async def _plan(compiler: _Compiler, query: SearchQuery) -> Plan:
    mode = query.result.contained
    if mode == "false":
        where = await compiler.filter(query)
    elif any(sort.code == "_score" for sort in query.sorts):
        # _sort=_score needs a _text/_content match, which a contained resource never is
        # (it has no full-text document, nor on SQLite): only resources themselves
        where = NOTHING if mode == "true" else await compiler.filter(query)
    else:
        contained = await compiler.contained_filter(query)
        if query.result.contained_type == "contained":
            return _entries_plan(query, contained)
        if query.sorts:
            return _containers_plan(query, contained)
        where = contained.where
    count_filter = None if query.total == "none" else where
    offset = 0 if query.position is not None else query.offset
    limit = query.count + 1  # one more than the page tells whether there is a next page
    sorts = query.sorts
    if not sorts:
        page = where
        if query.position is not None:
            page = all_of(where, {"_id": {"$gt": document_id(query.position[1])}})
        return Plan(page, count_filter, {"_id": 1}, offset, limit)
    pipeline: list[dict[str, Any]] = [{"$match": where}, *sort_stages(sorts)]
    if query.position is not None:
        pipeline.append({"$match": seek(sorts, query.position)})
    spec = sort_spec(sorts)
    pipeline.append({"$sort": spec})
    if offset:
        pipeline.append({"$skip": offset})
    pipeline += [{"$limit": limit}, {"$project": {**_PROJECTION, **_keys(sorts)}}]
    return Plan(where, count_filter, spec, offset, limit, pipeline)


def _entries_plan(query: SearchQuery, contained: _Contained) -> Plan:
    """`_containedType=contained`: each matching contained resource is a result of its
    own (and with `both` each matching resource), in the sort order, then by container
    `_id` and position in it (the resource itself first)."""
    head = [{"$match": contained.where}, *entry_stages(), {"$match": contained.rows}]
    count = None if query.total == "none" else [*head, {"$count": "n"}]
    sorts = query.sorts
    pipeline = [*head, *(sort_stages(sorts, entry=True) if sorts else ())]
    if query.position is not None:
        pipeline.append({"$match": seek(sorts, query.position, entry_after(query.position[1]))})
    spec = {**sort_spec(sorts), "n": 1}
    offset = 0 if query.position is not None else query.offset
    pipeline.append({"$sort": spec})
    if offset:
        pipeline.append({"$skip": offset})
    entry = {f"{ENTRY}.{name}": 1 for name in ("t", "i", "rf")}
    project = {**_PROJECTION, **_keys(sorts), "n": 1, **entry}
    pipeline += [{"$limit": query.count + 1}, {"$project": project}]
    return Plan(
        contained.where, None, spec, offset, query.count + 1, pipeline, count, rows="entries"
    )


def _containers_plan(query: SearchQuery, contained: _Contained) -> Plan:
    """`_contained` sorted, answering containers: each container once, by the lowest
    (ascending) or highest (descending) sort value of its matching rows (its contained
    matches, and itself with `both`), each key on its own, as sqlite_index groups them."""
    sorts = query.sorts
    group = {
        f"k{i}": {("$max" if sort.descending else "$min"): f"$k{i}"}
        for i, sort in enumerate(sorts)
    }
    pipeline = [
        {"$match": contained.where}, *entry_stages(), {"$match": contained.rows},
        *sort_values(sorts, entry=True), {"$group": {"_id": "$_id", **group}},
        missing_flags(sorts),
    ]  # fmt: skip
    if query.position is not None:
        pipeline.append({"$match": seek(sorts, query.position)})
    spec = sort_spec(sorts)
    offset = 0 if query.position is not None else query.offset
    pipeline.append({"$sort": spec})
    if offset:
        pipeline.append({"$skip": offset})
    pipeline.append({"$limit": query.count + 1})
    count_filter = None if query.total == "none" else contained.where
    return Plan(
        contained.where, count_filter, spec, offset, query.count + 1, pipeline,
        rows="containers",
    )  # fmt: skip


async def _containers_page(
    compiler: _Compiler, page_plan: Plan, projection: dict[str, Any]
) -> list[dict[str, Any]]:
    """The documents of a "containers" page, in its order, with their sort keys."""
    assert page_plan.pipeline is not None
    cursor = await compiler.collection.aggregate(page_plan.pipeline, session=compiler.session)
    rows = list(await cursor.to_list(None))
    found = compiler.collection.find(
        {"_id": {"$in": [row["_id"] for row in rows]}}, projection, session=compiler.session
    )
    by_id = {doc["_id"]: doc for doc in await found.to_list(None)}
    return [{**by_id[row["_id"]], **row} for row in rows if row["_id"] in by_id]


async def _entries_page(compiler: _Compiler, page_plan: Plan) -> list[dict[str, Any]]:
    """The rows of an "entries" page: resource documents as they are, contained
    resources as documents of their own: type and local id, their container's version
    and lastUpdated, the body of the contained resource (taken from the container's),
    its reference entries (for _include) and `container` (type, id)."""
    assert page_plan.pipeline is not None
    cursor = await compiler.collection.aggregate(page_plan.pipeline, session=compiler.session)
    parsed: dict[Any, list[dict[str, Any]]] = {}
    out: list[dict[str, Any]] = []
    for row in await cursor.to_list(None):
        n = int(row.get("n") or 0)
        entry = row.pop(ENTRY, None) or {}
        if n == 0:
            out.append({**row, INDEX_FIELD: {"rf": entry.get("rf", [])}})
            continue
        items = parsed.get(row["_id"])
        if items is None:
            items = parsed[row["_id"]] = resources_of(jsonutil.loads(bytes(row["body"])))
        # the entries were computed from this very body (written together), in this order
        item = items[n - 1] if n <= len(items) else None
        if item is None or (item["resourceType"], item["id"]) != (entry["t"], entry["i"]):
            continue  # pragma: no cover - an index out of step with the body
        out.append({
            **row, "type": entry["t"], "id": entry["i"], "deleted": False,
            "body": jsonutil.dumps(item), "container": (row["type"], row["id"]),
            INDEX_FIELD: {"rf": entry.get("rf", [])},
        })  # fmt: skip
    return out


def _stored(doc: Mapping[str, Any]) -> StoredResource:
    """A page row as a StoredResource; a contained resource's names its container."""
    container = doc.get("container")
    if container is None:
        return stored_from_document(dict(doc))
    return StoredResource(
        doc["type"], doc["id"], doc["version"], doc["lastUpdated"], False, bytes(doc["body"]),
        "PUT", container=container,
    )  # fmt: skip


def _row_key(doc: Mapping[str, Any]) -> tuple[Any, int]:
    """What tells page rows apart: a contained resource shares its container's _id."""
    return doc["_id"], int(doc.get("n") or 0)


async def _score_page(
    compiler: _Compiler, query: SearchQuery, page_plan: Plan, projection: dict[str, Any]
) -> list[dict[str, Any]]:
    """A page sorted by `_score` (the relevance of the first _text/_content clause,
    best first ascending, as SQLite's BM25): the matches are at most MAX_TEXT_HITS (the
    hits bound them), so their sort keys are read in one aggregation and ordered here;
    the page's documents are then read by `_id`."""
    assert page_plan.pipeline is not None
    scores = compiler.scores or {}
    keys = {f"k{i}": 1 for i in range(len(query.sorts))}
    stages = page_plan.pipeline[1 : 1 + len(sort_stages(query.sorts))]
    pipeline = [
        page_plan.pipeline[0], *stages, {"$project": {"_id": 1, "type": 1, "id": 1, **keys}}
    ]
    cursor = await compiler.collection.aggregate(pipeline, session=compiler.session)
    rows = list(await cursor.to_list(None))
    for row in rows:
        score = scores.get(f"{row['type']}/{row['id']}")
        for index, sort in enumerate(query.sorts):
            if sort.code == "_score":
                row[f"k{index}"] = None if score is None else -score
    order = sort_order(query.sorts)
    rows.sort(key=order)
    if query.position is not None:
        values, rid = query.position
        after = {**{f"k{i}": v for i, v in enumerate(values)}, "_id": document_id(rid)}
        rows = [row for row in rows if order(row) > order(after)]
    else:
        rows = rows[page_plan.skip :]
    rows = rows[: page_plan.limit]
    found = compiler.collection.find(
        {"_id": {"$in": [row["_id"] for row in rows]}}, projection, session=compiler.session
    )
    by_id = {doc["_id"]: doc for doc in await found.to_list(None)}
    return [{**by_id[row["_id"]], **row} for row in rows if row["_id"] in by_id]


# -- _include / _revinclude -------------------------------------------------------------

_Found = tuple[Any, str, str]  # _id, type, id


def _expand(includes: Iterable[Include], frontier: Sequence[Mapping[str, Any]]) -> list[Include]:
    """A bare `_include=*` as `Type:*` for each type in the frontier (as sqlite_graph)."""
    out: list[Include] = []
    for include in includes:
        if include.source_type != "*":
            out.append(include)
            continue
        for source_type in sorted({doc["type"] for doc in frontier}):
            params = search_parameters(source_type)
            codes = tuple(code for code, p in params.items() if p.type == "reference")
            out.append(replace(include, source_type=source_type, codes=codes))
    return out


_INCLUDE_PROJECTION = {**_PROJECTION, f"{INDEX_FIELD}.rf": 1}


async def _forward(
    compiler: _Compiler, include: Include, frontier: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """What the frontier's resources of include.source_type reference through it."""
    codes = {param_code(index_key(include.source_type, code)) for code in include.codes}
    targets: dict[str, set[str]] = {}
    for doc in frontier:
        if doc["type"] != include.source_type:
            continue
        for entry in doc.get(INDEX_FIELD, {}).get("rf", ()):
            if entry["p"] not in codes or not entry["t"]:
                continue
            if include.target_type is None or entry["t"] == include.target_type:
                targets.setdefault(entry["t"], set()).add(entry["i"])
    if not targets:
        return []
    alternatives = [{"type": t, "id": in_values(sorted(ids))} for t, ids in sorted(targets.items())]
    where = all_of(compiler.base(None), any_of(alternatives))
    cursor = compiler.collection.find(
        where, _INCLUDE_PROJECTION, sort=[("_id", 1)], session=compiler.session
    )
    return list(await cursor.to_list(None))


async def _reverse(
    compiler: _Compiler, include: Include, frontier: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The resources of include.source_type that reference the frontier through it."""
    params = custom.with_custom(include.source_type)  # R4 and indexed custom parameters
    targets = {t for code in include.codes for t in params[code].targets}
    by_type: dict[str, list[str]] = {}
    for doc in frontier:
        if doc.get("container") is not None:  # a contained resource: nothing points at it
            continue
        if include.target_type is not None and doc["type"] != include.target_type:
            continue
        if targets and doc["type"] not in targets:
            continue
        by_type.setdefault(doc["type"], []).append(doc["id"])
    codes = [param_code(index_key(include.source_type, code)) for code in include.codes]
    found: list[dict[str, Any]] = []
    for target_type, ids in by_type.items():
        element = {"p": in_values(codes), "i": in_values(ids), "t": target_type}
        where = all_of(
            compiler.base(include.source_type), {f"{INDEX_FIELD}.rf": {"$elemMatch": element}}
        )
        cursor = compiler.collection.find(
            where, _INCLUDE_PROJECTION, sort=[("_id", 1)], session=compiler.session
        )
        found += await cursor.to_list(None)
    return found


async def _included(
    compiler: _Compiler, includes: Sequence[Include], matches: Sequence[Mapping[str, Any]]
) -> tuple[list[StoredResource], bool]:
    """sqlite_graph.included on documents: round 0 applies every include to the
    matches, each further round (at most MAX_ROUNDS) the :iterate ones to what the round
    before added; a resource already in the page is never added again, so cycles end."""
    seen = {_row_key(doc) for doc in matches}
    frontier: list[Mapping[str, Any]] = list(matches)
    added: list[Mapping[str, Any]] = []
    truncated = False
    for round_ in range(1 + MAX_ROUNDS):
        active = _expand([i for i in includes if round_ == 0 or i.iterate], frontier)
        if not active or not frontier:
            break
        new: list[Mapping[str, Any]] = []
        for include in active:
            follow = _reverse if include.reverse else _forward
            for doc in await follow(compiler, include, frontier):
                if _row_key(doc) in seen:
                    continue
                if len(added) + len(new) >= MAX_INCLUDED:
                    truncated = True
                    break
                seen.add(_row_key(doc))
                new.append(doc)
        added += new
        frontier = new
        if truncated:
            break
    return [stored_from_document(doc) for doc in added], truncated


# -- search -----------------------------------------------------------------------------


async def search(
    db: Any,
    ctx: Context,
    query: SearchQuery,
    *,
    session: Any = None,
    fulltext: FullTextIndex | None = None,
) -> SearchPage:
    """One page of the current resources of ctx.tenant matching `query`, in its sort
    order (by `_id` when unsorted and among equal sort values), after `query.position`
    (keyset paging, search.cursor) or from `query.offset`; with its _include /
    _revinclude resources. `db` is a pymongo AsyncDatabase (or tests/mongo_async.py's
    facade over mongomock); `session` the caller's, for reads inside a transaction."""
    from terminology.search_modifiers import refuse_without_terminology

    refuse_without_terminology(query)  # :in/:above/...: the concept store is SQLite only
    compiler = _Compiler(db, ctx, session, fulltext)
    page_plan = await _plan(compiler, query)
    collection = compiler.collection
    total: int | None = None
    if page_plan.count_pipeline is not None:
        counted = await collection.aggregate(page_plan.count_pipeline, session=session)
        found = await counted.to_list(None)
        total = int(found[0]["n"]) if found else 0
    elif page_plan.count_filter is not None:
        total = await collection.count_documents(page_plan.count_filter, session=session)
    if query.count == 0 or total == 0:
        return SearchPage([], total)
    projection = dict(_PROJECTION)
    if query.result.includes:
        projection[f"{INDEX_FIELD}.rf"] = 1
    if any(sort.code == "_score" for sort in query.sorts):
        docs = await _score_page(compiler, query, page_plan, projection)
    elif page_plan.rows == "containers":
        docs = await _containers_page(compiler, page_plan, projection)
    elif page_plan.rows == "entries":
        docs = await _entries_page(compiler, page_plan)
    elif page_plan.pipeline is None:
        cursor = collection.find(
            page_plan.filter, projection, sort=list(page_plan.sort.items()),
            skip=page_plan.skip, limit=page_plan.limit, session=session,
        )  # fmt: skip
        docs = list(await cursor.to_list(None))
    else:
        pipeline = page_plan.pipeline
        if query.result.includes:
            pipeline = [*pipeline[:-1], {"$project": {**pipeline[-1]["$project"], **projection}}]
        cursor = await collection.aggregate(pipeline, session=session)
        docs = list(await cursor.to_list(None))
    next_cursor = None
    if len(docs) > query.count:
        docs = docs[: query.count]
        last = docs[-1]
        values = tuple(last.get(f"k{i}") for i in range(len(query.sorts)))
        rid = cursor_rid(last["_id"], int(last.get("n") or 0))
        next_cursor = cursors.encode(values, rid, query.sort_signature)
    matches = [_stored(doc) for doc in docs]
    if not query.result.includes:
        return SearchPage(matches, total, next_cursor=next_cursor)
    included, truncated = await _included(compiler, query.result.includes, docs)
    return SearchPage(
        matches, total, included=included, included_truncated=truncated, next_cursor=next_cursor
    )


__all__ = [
    "COLLECTION",
    "INDEXES",
    "INDEX_FIELD",
    "MAX_LINK_IDS",
    "MAX_TEXT_HITS",
    "Plan",
    "clause_filter",
    "create_indexes",
    "index_entries",
    "plan",
    "search",
]
