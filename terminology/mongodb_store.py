"""The concept store (terminology.store.ConceptStore) in the MongoDB database of the
resources (fhir_server.storage.mongodb.MongoStore), with the semantics of the SQLite one
(terminology.sqlite_store): the same load swap, precedence, hierarchy and filters. What
decides answers without touching storage (the load loop, filter plan and checks,
subsumption) is terminology.concept_rules, shared with SQLite.

Collections of its own, indexes created idempotently on first use; every document and
every query carries the tenant:

    term_systems      one document per load (`_id` = sid; state 'loading' until the swap)
    term_concepts     one per concept (`_id` = cid, load order): code, display, definition,
                      active, properties (JSON text, as SQLite keeps them) and their names
                      (`pkeys`), designations (`des`), the codes of its parents (`parents`:
                      the is-a edges, indexed for children), and the type-ahead tokens:
                      `words` (display and designations) and `ctoks` (the code), folded
                      as SQLite's FTS5 unicode61 folds them (terminology.mongodb_text)
    term_expansions / term_members   cached expansions (terminology.mongodb_expansions)
    term_sync         what terminology.service.sync last saw, per tenant
    term_counters     the sid / cid / eid sequences (ids are global, as SQLite rowids)

Loading writes the concepts in batches of plain inserts under a new sid that readers do
not see (state 'loading'); the swap (the new load 'ready', the previous load of the same
url+version and origin 'dropped', cached expansions gone) is one multi-document
transaction of the resource store, so a reader sees the old load or the new one, never
both or neither. The dropped load's concepts are deleted afterwards. Hierarchy queries
walk the `parents` index a level per query (SQLite: one recursive statement).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, ReturnDocument

from fhir_server.storage.mongodb_errors import mapped
from terminology.concept_rules import (  # the backend-neutral rules, shared with SQLite
    HEADER_FIELDS,
    ConceptRules,
    properties_from_json,
    properties_json,
    same_origin,
)
from terminology.model import CodeSystemHeader, Concept, Designation
from terminology.mongodb_expansions import MongoExpansions, utc_now
from terminology.mongodb_text import code_tokens, concept_tokens
from terminology.regex_filter import select_rows
from terminology.store import (
    ConceptDetail,
    Filter,
    SystemInfo,
)

if TYPE_CHECKING:
    from fhir_server.storage.base import Context
    from fhir_server.storage.mongodb import MongoStore

SYSTEMS = "term_systems"
CONCEPTS = "term_concepts"
MEMBERS = "term_members"
EXPANSIONS = "term_expansions"
SYNC = "term_sync"
COUNTERS = "term_counters"

_A = ASCENDING
INDEXES: dict[str, list[tuple[list[tuple[str, int]], dict[str, Any]]]] = {
    SYSTEMS: [([("tenant", _A), ("url", _A), ("version", _A)], {"name": "by_url"})],
    CONCEPTS: [
        ([("tenant", _A), ("sid", _A), ("code", _A)], {"unique": True, "name": "by_code"}),
        ([("tenant", _A), ("sid", _A), ("parents", _A)], {"name": "by_parent"}),
        # type-ahead: equality and prefix-anchored regexes on the folded tokens
        ([("tenant", _A), ("sid", _A), ("words", _A)], {"name": "by_word"}),
        ([("tenant", _A), ("sid", _A), ("ctoks", _A)], {"name": "by_code_token"}),
    ],
    EXPANSIONS: [([("tenant", _A), ("key", _A)], {"unique": True, "name": "by_key"}),
                 ([("tenant", _A), ("eid", _A)], {"name": "by_eid"})],  # fmt: skip
    MEMBERS: [
        ([("tenant", _A), ("eid", _A), ("pos", _A)], {"unique": True, "name": "by_pos"}),
        ([("tenant", _A), ("eid", _A), ("cid", _A)], {"name": "by_cid"}),
        ([("tenant", _A), ("eid", _A), ("ccode", _A)], {"name": "by_concept_code"}),
        ([("tenant", _A), ("eid", _A), ("code", _A), ("system", _A)], {"name": "by_code"}),
    ],
}

# what the in-Python filters and reads of a concept need
_SELECT_FIELDS = {"_id": 1, "code": 1, "display": 1, "props": 1}


def _content_rank(info: SystemInfo) -> tuple[bool, bool, int]:
    """README "Terminology", precedence (as sqlite_store._PRECEDENCE): an operator's or
    the shipped load before a CodeSystem resource's concepts, complete content before
    fragment/example/not-present, then the newest."""
    return info.source != "load", info.content != "complete", -info.sid


def _system_info(doc: dict[str, Any]) -> SystemInfo:
    h = doc["header"]
    return SystemInfo(
        doc["_id"], doc["url"], doc["version"] or None, h["name"], h.get("title"),
        h.get("status", "active"), h.get("content") or "complete", h.get("hierarchy_meaning"),
        h.get("copyright"), h.get("language"), doc.get("count", 0), doc["source"],
    )  # fmt: skip


def _concept_document(tenant: str, sid: int, cid: int, concept: Concept) -> dict[str, Any]:
    return {
        "_id": cid, "tenant": tenant, "sid": sid, "code": concept.code,
        "display": concept.display, "definition": concept.definition,
        "active": bool(concept.active), "props": properties_json(concept),
        "pkeys": list(concept.properties),
        "des": [[d.value, d.language, d.use_system, d.use_code] for d in concept.designations],
        "parents": list(dict.fromkeys(concept.parents)),
        "words": concept_tokens(concept), "ctoks": code_tokens(concept.code),
    }  # fmt: skip


def designations_of(doc: dict[str, Any]) -> tuple[Designation, ...]:
    return tuple(Designation(v, lang, us, uc) for v, lang, us, uc in doc.get("des") or ())


def _map_pymongo_errors(cls: type[Any]) -> type[Any]:
    """Every public coroutine method of `cls` (its own and inherited) with PyMongo
    errors turned into FHIR errors as in the resource store (mongodb_errors.mapped):
    an outage during $expand, $lookup or a load is a 503, not a 500."""
    names = {name for klass in cls.__mro__[:-1] for name in vars(klass)
             if not name.startswith("_")}  # fmt: skip
    for name in names:
        member = getattr(cls, name)
        if inspect.iscoroutinefunction(member):
            setattr(cls, name, mapped(member))
    return cls


@_map_pymongo_errors
class MongoConceptStore(MongoExpansions, ConceptRules):
    def __init__(self, store: MongoStore) -> None:
        self._store = store
        self._db = store.db
        self._ready = False
        self._properties: dict[int, frozenset[str]] = {}  # sid -> its property names

    async def _ensure(self, ctx: Context) -> None:
        if self._ready:
            return
        for name, specs in INDEXES.items():
            for keys, options in specs:
                await self._db[name].create_index(keys, **options)
        self._ready = True

    async def _next_ids(self, name: str, n: int = 1) -> int:
        """The first of `n` new ids of sequence `name` (atomic: $inc)."""
        doc = await self._db[COUNTERS].find_one_and_update(
            {"_id": name}, {"$inc": {"n": n}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return int(doc["n"]) - n + 1

    # -- loading ---------------------------------------------------------------

    async def _start_load(
        self, ctx: Context, header: CodeSystemHeader, version: str, source: str
    ) -> int:
        sid = await self._next_ids("sid")
        await self._db[SYSTEMS].insert_one({
            "_id": sid, "tenant": ctx.tenant, "url": header.url, "version": version,
            "state": "loading", "header": {f: getattr(header, f) for f in HEADER_FIELDS},
            "count": 0, "source": source, "loaded_at": utc_now(),
        })  # fmt: skip
        return sid

    async def _finish_load(
        self, ctx: Context, url: str, version: str, sid: int, source: str
    ) -> tuple[int, list[int]]:
        try:
            count = await self._db[CONCEPTS].count_documents({"tenant": ctx.tenant, "sid": sid})
            # (a swap that fails, e.g. a write conflict with a concurrent load of the same
            # system, leaves the previous load in place and this one's concepts go)
            old, eids = await self._swap(ctx, url, version, sid, source, count)
        except BaseException:
            await self._drop_sids(ctx, [sid])
            raise
        await self._delete_members(ctx, eids)
        await self._drop_sids(ctx, old)
        return count, old

    async def _swap(
        self, ctx: Context, url: str, version: str, sid: int, source: str, count: int
    ) -> tuple[list[int], list[int]]:
        """Make load `sid` visible and the previous one of the same origin gone, in one
        transaction (with the cached expansions); the dropped sids, and the expansion
        ids whose members are left to delete."""
        async with self._store.transaction(ctx) as txn:
            systems, session = txn.collection(SYSTEMS), txn.session
            # a load replaces only a load, a CodeSystem resource only its own earlier
            # versions' concepts (as sqlite_store)
            found = systems.find({"tenant": ctx.tenant, "url": url, "version": version,
                                  "_id": {"$ne": sid}}, {"source": 1}, session=session)
            old = [d["_id"] for d in await found.to_list(None) if same_origin(d["source"], source)]
            await systems.update_one({"_id": sid, "tenant": ctx.tenant},
                                     {"$set": {"state": "ready", "count": count}},
                                     session=session)  # fmt: skip
            if old:
                await systems.update_many({"tenant": ctx.tenant, "_id": {"$in": old}},
                                          {"$set": {"state": "dropped"}}, session=session)
            eids = await self._hide_expansions(ctx, session)
        return old, eids

    async def _write_batch(self, ctx: Context, sid: int, batch: list[Concept]) -> int:
        designations = sum(len(c.designations) for c in batch)
        # a repeated code replaces the earlier one (and takes the later place, as in SQLite)
        last = {c.code: n for n, c in enumerate(batch)}
        kept = [c for n, c in enumerate(batch) if last[c.code] == n]
        concepts = self._db[CONCEPTS]
        await concepts.delete_many({"tenant": ctx.tenant, "sid": sid,
                                    "code": {"$in": list(last)}})  # fmt: skip
        first = await self._next_ids("cid", len(kept))
        await concepts.insert_many([_concept_document(ctx.tenant, sid, first + n, c)
                                    for n, c in enumerate(kept)])  # fmt: skip
        return designations

    async def _drop_sids(self, ctx: Context, sids: list[int]) -> None:
        for sid in sids:
            await self._db[CONCEPTS].delete_many({"tenant": ctx.tenant, "sid": sid})
            await self._db[SYSTEMS].delete_one({"_id": sid, "tenant": ctx.tenant})
            self._properties.pop(sid, None)

    async def drop_code_system(
        self, ctx: Context, url: str, version: str | None, source: str | None = None
    ) -> bool:
        await self._ensure(ctx)
        where: dict[str, Any] = {"tenant": ctx.tenant, "url": url, "version": version or ""}
        if source is not None:
            where["source"] = source
        async with self._store.transaction(ctx) as txn:
            systems, session = txn.collection(SYSTEMS), txn.session
            sids = [d["_id"] for d in await systems.find(where, {"_id": 1},
                                                         session=session).to_list(None)]
            if sids:
                await systems.update_many({"tenant": ctx.tenant, "_id": {"$in": sids}},
                                          {"$set": {"state": "dropped"}}, session=session)
            eids = await self._hide_expansions(ctx, session)
        await self._delete_members(ctx, eids)
        await self._drop_sids(ctx, sids)
        return bool(sids)

    # -- reading ---------------------------------------------------------------

    async def _ready_systems(self, ctx: Context, where: dict[str, Any]) -> list[SystemInfo]:
        await self._ensure(ctx)
        found = self._db[SYSTEMS].find({"tenant": ctx.tenant, "state": "ready", **where})
        return [_system_info(d) for d in await found.to_list(None)]

    async def system(
        self, ctx: Context, url: str, version: str | None = None
    ) -> SystemInfo | None:
        where: dict[str, Any] = {"url": url}
        if version is not None:
            where["version"] = version
        found = await self._ready_systems(ctx, where)
        return min(found, key=_content_rank) if found else None

    async def systems(self, ctx: Context, url: str | None = None) -> list[SystemInfo]:
        found = await self._ready_systems(ctx, {} if url is None else {"url": url})
        return sorted(found, key=lambda s: (s.url, -s.sid))

    async def concept(self, ctx: Context, system: SystemInfo, code: str) -> ConceptDetail | None:
        await self._ensure(ctx)
        concepts = self._db[CONCEPTS]
        doc = await concepts.find_one({"tenant": ctx.tenant, "sid": system.sid, "code": code})
        if doc is None:
            return None
        children = await concepts.find(
            {"tenant": ctx.tenant, "sid": system.sid, "parents": code}, {"code": 1}
        ).to_list(None)
        # parents and children in code order, as SQLite's edge index gives them
        concept = Concept(code, doc.get("display"), doc.get("definition"), designations_of(doc),
                          tuple(sorted(doc.get("parents") or ())),
                          properties_from_json(doc.get("props")),
                          bool(doc.get("active", True)))  # fmt: skip
        return ConceptDetail(concept, tuple(sorted(c["code"] for c in children)))

    async def codes_to_ids(
        self, ctx: Context, system: SystemInfo, codes: Iterable[str]
    ) -> dict[str, int]:
        await self._ensure(ctx)
        wanted = list(dict.fromkeys(codes))
        found: dict[str, int] = {}
        for start in range(0, len(wanted), 1000):
            cursor = self._db[CONCEPTS].find(
                {"tenant": ctx.tenant, "sid": system.sid,
                 "code": {"$in": wanted[start:start + 1000]}}, {"code": 1})  # fmt: skip
            for doc in await cursor.to_list(None):
                found[doc["code"]] = doc["_id"]
        return found

    async def _walk(self, ctx: Context, sid: int, code: str, down: bool) -> set[str]:
        """The codes below (`down`) or above `code`, a level of the is-a edges per query."""
        seen: set[str] = set()
        frontier = {code}
        concepts = self._db[CONCEPTS]
        while frontier:
            level: set[str] = set()
            items = list(frontier)
            for start in range(0, len(items), 1000):
                part = items[start:start + 1000]
                if down:
                    cursor = concepts.find({"tenant": ctx.tenant, "sid": sid,
                                            "parents": {"$in": part}}, {"code": 1})
                    level.update(d["code"] for d in await cursor.to_list(None))
                else:
                    cursor = concepts.find({"tenant": ctx.tenant, "sid": sid,
                                            "code": {"$in": part}}, {"parents": 1})
                    for d in await cursor.to_list(None):
                        level.update(d.get("parents") or ())
            frontier = level - seen
            seen |= level
        return seen - {code}

    async def descendants(self, ctx: Context, system: SystemInfo, code: str) -> set[str]:
        await self._ensure(ctx)
        return await self._walk(ctx, system.sid, code, down=True)

    async def ancestors(self, ctx: Context, system: SystemInfo, code: str) -> set[str]:
        await self._ensure(ctx)
        return await self._walk(ctx, system.sid, code, down=False)

    async def select(
        self, ctx: Context, system: SystemInfo, filters: Iterable[Filter]
    ) -> list[int]:
        await self._ensure(ctx)
        plan = await self._plan(ctx, system, list(filters), inline_codes=1000)
        where: dict[str, Any] = {"tenant": ctx.tenant, "sid": system.sid}
        narrowing: list[dict[str, Any]] = [{"code": {"$in": sorted(codes)}}
                                           for codes in plan.code_lists]  # fmt: skip
        narrowing.extend({"display": display} for display in plan.displays)
        if narrowing:
            where["$and"] = narrowing
        docs = await self._db[CONCEPTS].find(
            where, _SELECT_FIELDS, sort=[("_id", ASCENDING)]
        ).to_list(None)
        rows = [(doc["_id"], doc["code"], doc.get("display"), doc.get("props")) for doc in docs]
        return await select_rows(rows, plan.post, plan.keeps)  # bounded regex, off-loop

    async def _property_names(self, ctx: Context, system: SystemInfo) -> frozenset[str]:
        names = await self._db[CONCEPTS].distinct(
            "pkeys", {"tenant": ctx.tenant, "sid": system.sid})
        return frozenset(str(n) for n in names)
