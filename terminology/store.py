"""The concept store: code systems loaded as concepts, and cached value set expansions.

Public API (for the loaders, the adapters and the FHIR operations)
------------------------------------------------------------------

    from terminology.store import concept_store
    concepts = concept_store(resource_store)        # one per ResourceStore, tables made once
    summary = await concepts.load_code_system(ctx, header, concepts_iter, progress=print_count)

`concept_store(store)` returns the `ConceptStore` of a `ResourceStore`: for SQLite
`terminology.sqlite_store.SQLiteConceptStore` (tables `term_*` in the same file as the
resources), for MongoDB `terminology.mongodb_store.MongoConceptStore` (collections `term_*`
in the same database); both created idempotently on first use, with the same semantics.

Loading (`load_code_system`)
    `header` is a `terminology.model.CodeSystemHeader`; `concepts` an iterable or async
    iterable of `terminology.model.Concept` (streamed: never held in memory all at once).
    Concepts are written in batches of `BATCH` per transaction under a new system row
    that only becomes visible when the last batch is in; then the previous load of the
    same url+version and the same kind of source (an operator/shipped "load", or a
    CodeSystem resource's concepts) is dropped; a resource never drops a load. Readers
    see the old content until the swap.
    `progress(n)` is called with the running concept count after each batch.
    The store also keeps a CodeSystem *resource* (content "not-present", or "fragment"
    when the header says so; no concepts) in the resource store, created or updated,
    so the system is searchable by url, version, name and status like any resource.
    Returns a `LoadSummary`. A concept whose code repeats replaces the earlier one.
    Raises `TerminologyError` (a 400 FHIRError) for a header without url or name.

Reading
    `system(ctx, url, version=None)`     -> SystemInfo | None: of the loads of that url (and
                                            version), an operator's/shipped load ("load")
                                            before a CodeSystem resource's concepts, complete
                                            content before fragment/example/not-present,
                                            then the newest
    `systems(ctx, url=None)`             -> list[SystemInfo]
    `concept(ctx, system, code)`         -> ConceptDetail | None (designations, properties,
                                            parents, children)
    `subsumes(ctx, system, a, b)`        -> "equivalent" | "subsumes" | "subsumed-by" |
                                            "not-subsumed"
    `descendants(ctx, system, code)` / `ancestors(...)` -> set[str] (codes, without `code`)
    `select(ctx, system, filters)`       -> list[int]: the concept ids (load order) that
                                            pass all `Filter`s (is-a, descendent-of,
                                            is-not-a, =, regex, in, not-in, exists,
                                            generalizes on "concept"/"code"/"display"/a
                                            property)
    `codes_to_ids(ctx, system, codes)`   -> dict[code, concept id]
    `drop_code_system(ctx, url, version, source=None)` -> bool (only that source if given)

Expansions (terminology.expand builds them from ValueSet.compose)
    `expansion(ctx, key)`                 -> Expansion | None (cached under `key`)
    `save_expansion(ctx, key, members)`   -> Expansion (members: `Member`s, in order)
    `expansion_page(ctx, expansion, text=None, active_only=False, offset=0, count=None,
                    language=None)`       -> (total, list[ExpandedConcept])
      `text` is type-ahead: every word must start a word of the concept's display or a
      designation (or, for a filter that looks like a code, the code); case and accents
      folded; ideographs matched character by character in order (FTS5 index over the
      designations); ranked: phrase, words together, all words whole, prefixes, then
      the expansion's order (MongoDB: token arrays, ranked in Python; see
      terminology.mongodb_expansions for the cost).
    `expansion_find(ctx, expansion, system, code)` -> ExpandedConcept | None (membership)
    `clear_expansions(ctx)`               every cached expansion of the tenant; called
                                          on every load and when CodeSystem/ValueSet
                                          resources change (terminology.service).
    `sync_mark(ctx)` / `set_sync_mark(ctx, mark)`  what the service saw of those resources
                                          last, kept with the data across restarts.

Errors: `TerminologyError` (fhir_server.errors.FHIRError subclass) names the bad thing.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from fhir_server.errors import FHIRError, Issue
from terminology.model import CodeSystemHeader, Concept, Designation

if TYPE_CHECKING:
    from fhir_server.storage.base import Context, ResourceStore

BATCH = 5000

Subsumption = Literal["equivalent", "subsumes", "subsumed-by", "not-subsumed"]
Progress = Callable[[int], object]


class TerminologyError(FHIRError):
    """Bad terminology input or a missing code system / value set, as an OperationOutcome."""

    def __init__(self, status: int, code: str, diagnostics: str, where: str | None = None):
        super().__init__(status, [Issue(code, diagnostics, expression=(where,) if where else ())])


@dataclass(frozen=True)
class LoadSummary:
    url: str
    version: str | None
    concepts: int
    designations: int
    seconds: float
    replaced: bool  # an earlier load of the same url+version was dropped
    resource_id: str  # the CodeSystem resource kept for search


@dataclass(frozen=True)
class SystemInfo:
    """One loaded code system (one url+version)."""

    sid: int
    url: str
    version: str | None
    name: str
    title: str | None
    status: str
    content: str
    hierarchy_meaning: str | None
    copyright: str | None
    language: str | None
    count: int
    source: str  # "load", or "resource:<id>/<versionId>" for a stored CodeSystem's concepts


@dataclass(frozen=True)
class ConceptDetail:
    concept: Concept  # with designations, properties and parents
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class Filter:
    """ValueSet.compose.include.filter: `property` `op` `value`."""

    property: str
    op: str
    value: str


@dataclass(frozen=True)
class Member:
    """One concept of an expansion: a concept of the store (`cid`), or a concept a
    ValueSet lists for a system the store does not hold (system/code/display)."""

    cid: int | None
    system: str | None = None
    version: str | None = None
    code: str | None = None
    display: str | None = None


@dataclass(frozen=True)
class Expansion:
    eid: int
    key: str
    total: int
    created_at: str


@dataclass(frozen=True)
class ExpandedConcept:
    system: str
    version: str | None
    code: str
    display: str | None
    active: bool = True
    designations: tuple[Designation, ...] = field(default=())


class ConceptStore(Protocol):
    async def load_code_system(
        self,
        ctx: Context,
        header: CodeSystemHeader,
        concepts: Iterable[Concept] | AsyncIterable[Concept],
        *,
        progress: Progress | None = None,
        source: str = "load",
        keep_resource: bool = True,
    ) -> LoadSummary: ...

    async def drop_code_system(
        self, ctx: Context, url: str, version: str | None, source: str | None = None
    ) -> bool: ...

    async def system(
        self, ctx: Context, url: str, version: str | None = None
    ) -> SystemInfo | None: ...

    async def systems(self, ctx: Context, url: str | None = None) -> list[SystemInfo]: ...

    async def concept(
        self, ctx: Context, system: SystemInfo, code: str
    ) -> ConceptDetail | None: ...

    async def codes_to_ids(
        self, ctx: Context, system: SystemInfo, codes: Iterable[str]
    ) -> dict[str, int]: ...

    async def descendants(self, ctx: Context, system: SystemInfo, code: str) -> set[str]: ...

    async def ancestors(self, ctx: Context, system: SystemInfo, code: str) -> set[str]: ...

    async def subsumes(
        self, ctx: Context, system: SystemInfo, code_a: str, code_b: str
    ) -> Subsumption: ...

    async def select(
        self, ctx: Context, system: SystemInfo, filters: Iterable[Filter]
    ) -> list[int]: ...

    async def expansion(self, ctx: Context, key: str) -> Expansion | None: ...

    async def save_expansion(
        self, ctx: Context, key: str, members: Iterable[Member]
    ) -> Expansion: ...

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
    ) -> tuple[int, list[ExpandedConcept]]: ...

    async def expansion_find(
        self, ctx: Context, expansion: Expansion, system: str | None, code: str
    ) -> ExpandedConcept | None: ...

    async def clear_expansions(self, ctx: Context) -> None: ...

    async def sync_mark(self, ctx: Context) -> str | None:
        """What terminology.service.sync recorded last (kept across restarts)."""
        ...

    async def set_sync_mark(self, ctx: Context, mark: str) -> None: ...


_STORES: weakref.WeakKeyDictionary[object, ConceptStore] = weakref.WeakKeyDictionary()


def concept_store(store: ResourceStore) -> ConceptStore:
    """The concept store kept beside `store` (the same one on every call)."""
    found = _STORES.get(store)
    if found is None:
        from fhir_server.storage.mongodb import MongoStore
        from fhir_server.storage.sqlite import SQLiteStore

        if isinstance(store, SQLiteStore):
            from terminology.sqlite_store import SQLiteConceptStore

            found = SQLiteConceptStore(store)
        elif isinstance(store, MongoStore):
            from terminology.mongodb_store import MongoConceptStore

            found = MongoConceptStore(store)
        else:
            raise FHIRError.simple(
                501, "not-supported",
                f"The terminology service has no concept store for {type(store).__name__}",
            )
        _STORES[store] = found
    return found
