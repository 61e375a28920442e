"""The backend-neutral part of the concept stores (terminology.store.ConceptStore).

`SQLiteConceptStore` (terminology.sqlite_store) and `MongoConceptStore`
(terminology.mongodb_store) give the same answers for the same content; what decides
those answers without touching storage lives here once, so the two cannot drift apart:

    HEADER_FIELDS, BUILT_IN_PROPERTIES   what a load keeps of its header; the filter
                                         properties every code system has
    properties_json / properties_from_json   a concept's properties as stored (JSON text;
                                         decimals kept exact)
    same_origin(a, b)                    whether a load replaces another (the load swap)
    each(concepts)                       a loader's iterable or async iterable, async
    matches(f, row, deadline)            whether a (cid, code, display, properties) row
                                         passes a filter checked per concept
    ConceptRules                         base class: the load (its checks, batch loop and
                                         summary), subsumption,
                                         the codes a hierarchy/code filter names, the
                                         filter property check and the selection plan;
                                         a backend supplies the storage reads and writes
                                         (`_ensure`, `_start_load`, `_write_batch`,
                                         `_finish_load`, `_drop_sids`, `_property_names`,
                                         `ancestors`, `descendants`)
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from terminology.model import CodeSystemHeader, Concept
from terminology.regex_filter import fullmatch_any
from terminology.store import (
    BATCH,
    Filter,
    LoadSummary,
    Progress,
    Subsumption,
    SystemInfo,
    TerminologyError,
)

if TYPE_CHECKING:
    from fhir_server.storage.base import Context

HEADER_FIELDS = ("name", "title", "status", "content", "hierarchy_meaning", "copyright",
                 "language")  # fmt: skip

# filter properties every code system has (ValueSet.compose.include.filter.property)
BUILT_IN_PROPERTIES = frozenset({"concept", "code", "display"})

_WHERE_FILTER = "ValueSet.compose.include.filter"

# (concept id, code, display, properties JSON text or None): what selection reads
Row = tuple[Any, ...]


def _json_value(value: object) -> object:
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    return value


def _from_json_value(value: object) -> object:
    if isinstance(value, dict) and "decimal" in value:
        return Decimal(value["decimal"])
    return value


def properties_json(concept: Concept) -> str | None:
    """A concept's properties as both backends store them (JSON text, exact decimals)."""
    if not concept.properties:
        return None
    return json.dumps({k: [_json_value(v) for v in vs] for k, vs in concept.properties.items()})


def properties_from_json(text: str | None) -> dict[str, tuple[object, ...]]:
    return {
        k: tuple(_from_json_value(v) for v in vs)
        for k, vs in (json.loads(text) if text else {}).items()
    }


def same_origin(a: str, b: str) -> bool:
    """Both loads by the operator/shipped content, or both of one CodeSystem resource
    ("resource:<id>/<versionId>")."""
    return a == b or (a.startswith("resource:") and b.startswith("resource:")
                      and a.rsplit("/", 1)[0] == b.rsplit("/", 1)[0])  # fmt: skip


async def each(concepts: Iterable[Concept] | AsyncIterable[Concept]) -> AsyncIterator[Concept]:
    if isinstance(concepts, AsyncIterable):
        async for concept in concepts:
            yield concept
    else:
        for concept in concepts:
            yield concept


def matches(f: Filter, row: Row, deadline: float | None = None) -> bool:
    """Whether a concept row passes a filter; a regex gives up at `deadline`
    (time.monotonic(), see terminology.regex_filter)."""
    _, code, display, props = row
    if f.property in ("code", "concept"):
        values: list[object] = [code]
    elif f.property == "display":
        values = [display]
    else:
        values = json.loads(props).get(f.property, []) if props else []
        values = [_from_json_value(v) for v in values]
    texts = [("true" if v else "false") if isinstance(v, bool) else str(v)
             for v in values if v is not None]  # fmt: skip
    if f.op == "exists":
        return bool(texts) == (f.value != "false")
    if f.op == "=":
        return f.value in texts
    if f.op == "in":
        wanted = {v.strip() for v in f.value.split(",")}
        return any(t in wanted for t in texts)
    if f.op == "not-in":
        wanted = {v.strip() for v in f.value.split(",")}
        return not any(t in wanted for t in texts)
    if f.op == "regex":
        return fullmatch_any(f, texts, deadline)
    return False


@dataclass
class SelectionPlan:
    """How `select` narrows a code system's concepts: what the backend's query can ask
    (codes lists, display equality) and what is checked per concept (`keeps`)."""

    code_lists: list[set[str]] = field(default_factory=list)  # code IN each, in the query
    displays: list[str] = field(default_factory=list)  # display = each, in the query
    code_sets: list[tuple[set[str], bool]] = field(default_factory=list)  # (codes, negated)
    post: list[Filter] = field(default_factory=list)  # checked with `matches`

    def keeps(self, row: Row, deadline: float | None) -> bool:
        return (all((row[1] in codes) != negate for codes, negate in self.code_sets)
                and all(matches(f, row, deadline) for f in self.post))  # fmt: skip


class ConceptRules:
    """What both concept stores decide the same way, over the storage access a backend
    supplies. Subclasses set `self._properties = {}` (sid -> its property names)."""

    _properties: dict[int, frozenset[str]]
    _store: Any  # the ResourceStore the concepts live beside (keeps the CodeSystem resource)

    async def _ensure(self, ctx: Context) -> None:
        """Create the backend's tables/collections and indexes (once)."""
        raise NotImplementedError

    async def _start_load(
        self, ctx: Context, header: CodeSystemHeader, version: str, source: str
    ) -> int:
        """A new load (sid) of `header`, invisible to readers until `_finish_load`."""
        raise NotImplementedError

    async def _finish_load(
        self, ctx: Context, url: str, version: str, sid: int, source: str
    ) -> tuple[int, list[int]]:
        """Make load `sid` visible, the previous load of the same origin gone (the swap)
        and the cached expansions cleared; (its concept count, the dropped sids)."""
        raise NotImplementedError

    async def _drop_sids(self, ctx: Context, sids: list[int]) -> None:
        """Delete loads `sids` and their concepts."""
        raise NotImplementedError

    async def descendants(self, ctx: Context, system: SystemInfo, code: str) -> set[str]:
        raise NotImplementedError

    async def ancestors(self, ctx: Context, system: SystemInfo, code: str) -> set[str]:
        raise NotImplementedError

    async def _write_batch(self, ctx: Context, sid: int, batch: list[Concept]) -> int:
        """Write a batch of concepts under load `sid`; the designations written."""
        raise NotImplementedError

    async def _property_names(self, ctx: Context, system: SystemInfo) -> frozenset[str]:
        """The property names the concepts of `system` use (one read of storage)."""
        raise NotImplementedError

    async def load_code_system(
        self,
        ctx: Context,
        header: CodeSystemHeader,
        concepts: Iterable[Concept] | AsyncIterable[Concept],
        *,
        progress: Progress | None = None,
        source: str = "load",
        keep_resource: bool = True,
    ) -> LoadSummary:
        """terminology.store.ConceptStore.load_code_system (the module docstring there)."""
        if not header.url or not header.name:
            raise TerminologyError(400, "required", "A code system needs a url and a name", "url")
        await self._ensure(ctx)
        started = time.perf_counter()
        version = header.version or ""
        sid = await self._start_load(ctx, header, version, source)
        try:
            _, designations = await self._write_concepts(ctx, sid, concepts, progress)
        except BaseException:
            await self._drop_sids(ctx, [sid])
            raise
        count, old = await self._finish_load(ctx, header.url, version, sid, source)
        resource_id = ""
        if keep_resource:
            from terminology.resources import keep_code_system_resource

            resource_id = await keep_code_system_resource(self._store, ctx, header, count)
        return LoadSummary(header.url, header.version, count, designations,
                           time.perf_counter() - started, bool(old), resource_id)  # fmt: skip

    async def _write_concepts(
        self,
        ctx: Context,
        sid: int,
        concepts: Iterable[Concept] | AsyncIterable[Concept],
        progress: Progress | None,
    ) -> tuple[int, int]:
        """Stream `concepts` into load `sid` in batches of BATCH; (concepts, designations)
        written. `progress(n)` after each batch."""
        count = designations = 0
        batch: list[Concept] = []
        async for concept in each(concepts):
            batch.append(concept)
            if len(batch) >= BATCH:
                designations += await self._write_batch(ctx, sid, batch)
                count += len(batch)
                batch = []
                if progress is not None:
                    progress(count)
        if batch:
            designations += await self._write_batch(ctx, sid, batch)
            count += len(batch)
            if progress is not None:
                progress(count)
        return count, designations

    async def subsumes(
        self, ctx: Context, system: SystemInfo, code_a: str, code_b: str
    ) -> Subsumption:
        if code_a == code_b:
            return "equivalent"
        if code_a in await self.ancestors(ctx, system, code_b):
            return "subsumes"
        if code_b in await self.ancestors(ctx, system, code_a):
            return "subsumed-by"
        return "not-subsumed"

    async def _plan(
        self, ctx: Context, system: SystemInfo, filters: list[Filter], inline_codes: int
    ) -> SelectionPlan:
        """The selection plan of `filters` (a 400 naming an unknown property or an
        unsupported operator); a code list of at most `inline_codes` codes goes into
        the backend's query, a longer or negated one is checked per concept."""
        await self._check_properties(ctx, system, filters)
        plan = SelectionPlan()
        for f in filters:
            codes = await self._codes_for(ctx, system, f)
            negate = f.op in ("is-not-a", "not-in")
            if codes is not None and len(codes) <= inline_codes and not negate:
                plan.code_lists.append(codes)
            elif codes is not None:
                plan.code_sets.append((codes, negate))
            elif f.property == "display" and f.op == "=":
                plan.displays.append(f.value)
            elif f.op in ("=", "regex", "in", "not-in", "exists"):
                plan.post.append(f)
            else:
                raise TerminologyError(
                    400, "not-supported",
                    f"Filter operator '{f.op}' on property '{f.property}' is not supported",
                    _WHERE_FILTER,
                )
        return plan

    async def _check_properties(
        self, ctx: Context, system: SystemInfo, filters: list[Filter]
    ) -> None:
        """400 naming a filter property the code system does not have (else the
        expansion would be silently empty: "no match" and "unsupported" look alike)."""
        if all(f.property in BUILT_IN_PROPERTIES for f in filters):
            return
        known = self._properties.get(system.sid)
        if known is None:  # one read per loaded system (a new load is a new sid)
            known = await self._property_names(ctx, system)
            self._properties[system.sid] = known
        for f in filters:
            if f.property not in BUILT_IN_PROPERTIES and f.property not in known:
                have = ", ".join(sorted(BUILT_IN_PROPERTIES | known))
                raise TerminologyError(
                    400, "not-supported", f"Filter property '{f.property}' is not a property "
                    f"of code system {system.url} (it has: {have})", _WHERE_FILTER,
                )  # fmt: skip

    async def _codes_for(self, ctx: Context, system: SystemInfo, f: Filter) -> set[str] | None:
        """The codes a hierarchy or code filter names; None for a filter on other
        properties (checked per concept)."""
        op, value = f.op, f.value
        if f.property not in ("concept", "code"):
            return None
        if op == "=":
            return {value}
        if op in ("in", "not-in"):
            return {v.strip() for v in value.split(",") if v.strip()}
        if op in ("is-a", "is-not-a"):
            return await self.descendants(ctx, system, value) | {value}
        if op == "descendent-of":
            return await self.descendants(ctx, system, value)
        if op == "generalizes":
            return await self.ancestors(ctx, system, value) | {value}
        return None
