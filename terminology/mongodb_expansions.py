"""Cached value set expansions in MongoDB (term_expansions, term_members) and the
type-ahead text filter over them: the part of terminology.mongodb_store.MongoConceptStore
that pages expansions, with the semantics of terminology.sqlite_expansions.

A member document keeps its position, its concept id, and, copied from the concept when
the expansion is saved, the concept's code (`ccode`), load (`sid`) and `active` flag:
concepts never change under a load id, and every load clears the cached expansions, so
the copies stay true; activeOnly pages and membership checks are then single indexed
queries. An expansion is written member documents first, under a new id nobody reads
yet; then the expansion document (one upsert on tenant+key) makes it visible, and the
members of the one it replaced are deleted.

Type-ahead (`text`), and where it differs in cost from SQLite: SQLite counts and pages
each rank as a disjoint FTS5 query, so a request reads no more rows than its page. Here
the candidates (concepts of the expansion's loads whose token arrays hold every word,
terminology.mongodb_text) are fetched with only their ids and token arrays and ranked in
Python; a request costs in proportion to the number of concepts matching the filter, not
to the page size, so short filters on large code systems cost most: on ICD-10-CM (98,505
concepts) `a` has 41,565 candidates (ranked in about 0.2 s of Python on a busy 2-core
machine, plus fetching them), `diab` 654, `type 2 diabetes` 126. More than
MAX_TEXT_CANDIDATES candidates is a 400 asking for a longer filter. A member
list expansion (not a whole load in load order) then probes its members by concept id.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument

from fhir_server.storage.mongodb_query import regex_literal
from terminology.language import pick_display
from terminology.mongodb_text import PREFIX, text_filter
from terminology.store import ExpandedConcept, Expansion, Member, TerminologyError

if TYPE_CHECKING:
    from fhir_server.storage.base import Context

MAX_EXPANSIONS = 200  # cached per tenant; the oldest go first (as SQLite)
MAX_TEXT_CANDIDATES = 200_000  # concepts ranked in Python for one type-ahead request
_CHUNK = 1000  # ids per $in

CONCEPTS = "term_concepts"
MEMBERS = "term_members"
EXPANSIONS = "term_expansions"
SYNC = "term_sync"
SYSTEMS = "term_systems"

Row = tuple[Any, Any, Any, Any, Any]  # cid, system, version, code, display


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


class MongoExpansions:
    """Expansion methods of the MongoDB concept store (mixed into MongoConceptStore,
    which provides the database, the indexes and the id sequences)."""

    _db: Any

    async def _ensure(self, ctx: Context) -> None:
        raise NotImplementedError

    async def _next_ids(self, name: str, n: int = 1) -> int:
        raise NotImplementedError

    # -- clearing and the sync mark ----------------------------------------------

    async def _hide_expansions(self, ctx: Context, session: Any = None) -> list[int]:
        """Delete the tenant's expansion documents (inside `session`'s transaction if
        given); the ids whose members are left to `_delete_members`."""
        expansions = self._db[EXPANSIONS]
        found = expansions.find({"tenant": ctx.tenant}, {"eid": 1}, session=session)
        eids = [d["eid"] for d in await found.to_list(None)]
        if eids:
            await expansions.delete_many({"tenant": ctx.tenant}, session=session)
        return eids

    async def _delete_members(self, ctx: Context, eids: list[int]) -> None:
        for part in _chunks(eids):
            await self._db[MEMBERS].delete_many({"tenant": ctx.tenant, "eid": {"$in": part}})

    async def clear_expansions(self, ctx: Context) -> None:
        await self._ensure(ctx)
        await self._delete_members(ctx, await self._hide_expansions(ctx))

    async def sync_mark(self, ctx: Context) -> str | None:
        await self._ensure(ctx)
        doc = await self._db[SYNC].find_one({"_id": ctx.tenant, "tenant": ctx.tenant})
        return doc["mark"] if doc else None

    async def set_sync_mark(self, ctx: Context, mark: str) -> None:
        await self._ensure(ctx)
        await self._db[SYNC].update_one({"_id": ctx.tenant, "tenant": ctx.tenant},
                                        {"$set": {"mark": mark}}, upsert=True)  # fmt: skip

    # -- saving --------------------------------------------------------------------

    async def expansion(self, ctx: Context, key: str) -> Expansion | None:
        await self._ensure(ctx)
        doc = await self._db[EXPANSIONS].find_one({"tenant": ctx.tenant, "key": key})
        return Expansion(doc["eid"], key, doc["total"], doc["created_at"]) if doc else None

    async def save_expansion(
        self, ctx: Context, key: str, members: Iterable[Member]
    ) -> Expansion:
        await self._ensure(ctx)
        eid = await self._next_ids("eid")
        total, lo, last, run = 0, None, None, True
        sids: set[int] = set()
        batch: list[Member] = []
        for m in members:
            if m.cid is None or m.display is not None or (last is not None and m.cid != last + 1):
                run = False  # not a whole load in load order
            lo = m.cid if lo is None else lo
            last = m.cid
            batch.append(m)
            if len(batch) >= _CHUNK:
                sids |= await self._write_members(ctx, eid, total, batch)
                total += len(batch)
                batch = []
        if batch:
            sids |= await self._write_members(ctx, eid, total, batch)
            total += len(batch)
        created = utc_now()
        doc = {"tenant": ctx.tenant, "key": key, "eid": eid, "total": total,
               "created_at": created, "range": [lo, last] if run and total else None,
               "sids": sorted(sids)}  # fmt: skip
        before = await self._db[EXPANSIONS].find_one_and_update(
            {"tenant": ctx.tenant, "key": key}, {"$set": doc}, upsert=True,
            return_document=ReturnDocument.BEFORE,
        )
        stale = [before["eid"]] if before else []
        older = self._db[EXPANSIONS].find({"tenant": ctx.tenant}, {"eid": 1},
                                          sort=[("eid", DESCENDING)], skip=MAX_EXPANSIONS)
        dropped = [d["eid"] for d in await older.to_list(None)]
        if dropped:
            await self._db[EXPANSIONS].delete_many({"tenant": ctx.tenant,
                                                    "eid": {"$in": dropped}})  # fmt: skip
        await self._delete_members(ctx, stale + dropped)
        return Expansion(eid, key, total, created)

    async def _write_members(
        self, ctx: Context, eid: int, start: int, batch: list[Member]
    ) -> set[int]:
        cids = [m.cid for m in batch if m.cid is not None]
        info: dict[int, dict[str, Any]] = {}
        if cids:
            found = self._db[CONCEPTS].find({"tenant": ctx.tenant, "_id": {"$in": cids}},
                                            {"code": 1, "sid": 1, "active": 1})  # fmt: skip
            info = {d["_id"]: d for d in await found.to_list(None)}
        docs = []
        for pos, m in enumerate(batch, start):
            doc: dict[str, Any] = {"tenant": ctx.tenant, "eid": eid, "pos": pos, "cid": m.cid,
                                   "system": m.system, "version": m.version, "code": m.code,
                                   "display": m.display}  # fmt: skip
            concept = info.get(m.cid) if m.cid is not None else None
            if concept is not None:
                doc.update(ccode=concept["code"], sid=concept["sid"],
                           active=bool(concept.get("active", True)))
            docs.append(doc)
        await self._db[MEMBERS].insert_many(docs)
        return {d["sid"] for d in info.values()}

    # -- paging ----------------------------------------------------------------------

    async def _expansion_doc(self, ctx: Context, expansion: Expansion) -> dict[str, Any]:
        doc = await self._db[EXPANSIONS].find_one({"tenant": ctx.tenant, "eid": expansion.eid})
        return doc or {"range": None, "sids": []}  # cleared meanwhile: its members are gone

    async def expansion_page(
        self,
        ctx: Context,
        expansion: Expansion,
        *,
        text: str | None = None,
        active_only: bool = False,
        offset: int = 0,
        count: int | None = None,
        language: str | None = None,
    ) -> tuple[int, list[ExpandedConcept]]:
        await self._ensure(ctx)
        if text is not None and text.strip():
            return await self._text_page(ctx, expansion, text, active_only, offset, count,
                                         language)  # fmt: skip
        where: dict[str, Any] = {"tenant": ctx.tenant, "eid": expansion.eid}
        if active_only:
            where["active"] = {"$ne": False}  # members without a concept count as active
            total = await self._db[MEMBERS].count_documents(where)
        else:
            total = expansion.total
        if count == 0:
            return total, []
        found = self._db[MEMBERS].find(where, sort=[("pos", ASCENDING)], skip=offset,
                                       limit=count or 0)  # fmt: skip
        rows = [_row(d) for d in await found.to_list(None)]
        return total, await self._expanded(ctx, rows, language)

    async def _text_page(
        self,
        ctx: Context,
        expansion: Expansion,
        text: str,
        active_only: bool,
        offset: int,
        count: int | None,
        language: str | None,
    ) -> tuple[int, list[ExpandedConcept]]:
        """The members matching type-ahead `text`, ranked (phrase, words together, whole
        words, prefixes), each rank in the expansion's order; the total and one page."""
        wanted = text_filter(text)
        if wanted is None:
            return 0, []
        info = await self._expansion_doc(ctx, expansion)
        where: dict[str, Any] = {"tenant": ctx.tenant, "sid": {"$in": info["sids"]},
                                 **wanted.query()}  # fmt: skip
        span = info.get("range")
        if span is not None:  # a whole load in load order: the concept ids are the order
            where["_id"] = {"$gte": span[0], "$lte": span[1]}
        if active_only:
            where["active"] = True
        candidates = await self._db[CONCEPTS].find(
            where, {"words": 1, "ctoks": 1}, limit=MAX_TEXT_CANDIDATES + 1
        ).to_list(None)
        if len(candidates) > MAX_TEXT_CANDIDATES:
            raise TerminologyError(
                400, "too-costly", f"filter '{text.strip()}' matches more than "
                f"{MAX_TEXT_CANDIDATES} concepts: type more of the word", "filter")  # fmt: skip
        ranks: dict[int, int] = {}
        for doc in candidates:
            rank = wanted.rank(doc.get("words") or [], doc.get("ctoks") or [])
            if rank is not None:
                ranks[doc["_id"]] = rank
        # (rank, position in the expansion, concept id or None, member position or None)
        hits: list[tuple[int, int, int | None, int | None]] = []
        if span is not None:
            hits = [(rank, cid, cid, None) for cid, rank in ranks.items()]
        else:
            for part in _chunks(list(ranks)):
                found = self._db[MEMBERS].find(
                    {"tenant": ctx.tenant, "eid": expansion.eid, "cid": {"$in": part}},
                    {"cid": 1, "pos": 1})  # fmt: skip
                hits += [(ranks[d["cid"]], d["pos"], None, d["pos"])
                         for d in await found.to_list(None)]
            # a concept of a system the store does not hold: its display contains the text
            others = self._db[MEMBERS].find(
                {"tenant": ctx.tenant, "eid": expansion.eid, "cid": None,
                 "display": {"$regex": regex_literal(text.strip()), "$options": "i"}},
                {"pos": 1})  # fmt: skip
            hits += [(PREFIX, d["pos"], None, d["pos"]) for d in await others.to_list(None)]
        hits.sort(key=lambda h: (h[0], h[1]))
        page = hits[offset:] if count is None else hits[offset:offset + count]
        if not page:
            return len(hits), []
        by_pos: dict[int, Row] = {}
        positions = [h[3] for h in page if h[3] is not None]
        for part in _chunks(positions):
            found = self._db[MEMBERS].find(
                {"tenant": ctx.tenant, "eid": expansion.eid, "pos": {"$in": part}})
            by_pos.update((d["pos"], _row(d)) for d in await found.to_list(None))
        rows: list[Row] = [
            (h[2], None, None, None, None) if h[3] is None else by_pos[h[3]] for h in page
        ]
        return len(hits), await self._expanded(ctx, rows, language)

    async def expansion_find(
        self, ctx: Context, expansion: Expansion, system: str | None, code: str
    ) -> ExpandedConcept | None:
        await self._ensure(ctx)
        members = self._db[MEMBERS]
        base = {"tenant": ctx.tenant, "eid": expansion.eid}
        doc = None
        if system is not None:
            loads = await self._db[SYSTEMS].find(
                {"tenant": ctx.tenant, "url": system, "state": "ready"}, {"_id": 1}
            ).to_list(None)
            sids = [d["_id"] for d in loads]
            if sids:
                doc = await members.find_one({**base, "ccode": code, "sid": {"$in": sids}})
            if doc is None:
                doc = await members.find_one({**base, "code": code, "system": system})
        else:  # no system given: the code alone (ValueSet $validate-code with only `code`)
            found = members.find({**base, "$or": [{"code": code}, {"ccode": code}]},
                                 sort=[("pos", ASCENDING)], limit=1)  # fmt: skip
            doc = next(iter(await found.to_list(None)), None)
        if doc is None:
            return None
        expanded = await self._expanded(ctx, [_row(doc)], None)
        return expanded[0] if expanded else None

    async def _expanded(
        self, ctx: Context, rows: list[Row], language: str | None
    ) -> list[ExpandedConcept]:
        from terminology.mongodb_store import designations_of

        cids = [row[0] for row in rows if row[0] is not None]
        info: dict[int, dict[str, Any]] = {}
        systems: dict[int, tuple[str, str]] = {}
        for part in _chunks(cids):
            found = self._db[CONCEPTS].find(
                {"tenant": ctx.tenant, "_id": {"$in": part}},
                {"sid": 1, "code": 1, "display": 1, "active": 1, "des": 1})  # fmt: skip
            info.update((d["_id"], d) for d in await found.to_list(None))
        sids = list({d["sid"] for d in info.values()})
        if sids:
            found = self._db[SYSTEMS].find({"tenant": ctx.tenant, "_id": {"$in": sids}},
                                           {"url": 1, "version": 1})  # fmt: skip
            systems = {d["_id"]: (d["url"], d["version"]) for d in await found.to_list(None)}
        out: list[ExpandedConcept] = []
        for cid, system, version, code, display in rows:
            concept = info.get(cid) if cid is not None else None
            if concept is None or concept["sid"] not in systems:
                out.append(ExpandedConcept(system or "", version, code or "", display))
                continue
            url, loaded_version = systems[concept["sid"]]
            found_designations = designations_of(concept)
            # a display the ValueSet gives for the concept wins over the code system's
            shown = pick_display(display or concept.get("display"), found_designations, language)
            out.append(ExpandedConcept(url, loaded_version or None, concept["code"], shown,
                                       bool(concept.get("active", True)),
                                       found_designations))  # fmt: skip
        return out


def _row(doc: dict[str, Any]) -> Row:
    return doc.get("cid"), doc.get("system"), doc.get("version"), doc.get("code"), doc.get(
        "display")
