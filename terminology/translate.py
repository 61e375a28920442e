"""ConceptMap translation over the ConceptMap resources of the store ($translate, and the
adapters mapping local codes to standard ones).

    from terminology.translate import translate, Match
    matches = await translate(store, ctx, system="urn:oid:1.2.3|local", code="GLU")

ConceptMaps are ordinary resources. An index of every current ConceptMap of the
tenant (source system+code -> targets, and the reverse) is built on first use and kept
in memory; it is rebuilt when the ConceptMap history changes (its version count and
newest instant, one indexed query per call), so a ConceptMap written by any path or
process is seen on the next call. `invalidate(store)` drops it at once.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from search.query import parse_search

if TYPE_CHECKING:
    from fhir_server.storage.base import Context, ResourceStore

# reverse translation reads an equivalence from the target's side
_REVERSED = {"wider": "narrower", "narrower": "wider", "subsumes": "specializes",
             "specializes": "subsumes"}  # fmt: skip
# R4 equivalences that are not matches (translate result = false when only these)
NOT_MATCHING = frozenset({"unmatched", "disjoint"})


@dataclass(frozen=True)
class Match:
    equivalence: str  # R4 ConceptMapEquivalence: equivalent, wider, narrower, ...
    system: str | None  # the target system (the source system when reverse)
    code: str | None
    display: str | None
    concept_map: str  # ConceptMap.url (or "ConceptMap/<id>" when it has none)
    source_value_set: str | None = None
    target_value_set: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class _Entry:
    match: Match
    map_url: str


class _Index:
    def __init__(self, fingerprint: tuple[int, str | None]) -> None:
        self.fingerprint = fingerprint
        self.forward: dict[tuple[str, str], list[Match]] = {}
        self.backward: dict[tuple[str, str], list[Match]] = {}

    def add(self, resource_id: str, cm: dict[str, Any]) -> None:
        url = cm.get("url") or f"ConceptMap/{resource_id}"
        source_vs = cm.get("sourceUri") or cm.get("sourceCanonical")
        target_vs = cm.get("targetUri") or cm.get("targetCanonical")
        for group in cm.get("group") or []:
            src, tgt = group.get("source") or "", group.get("target")
            for element in group.get("element") or []:
                code = element.get("code")
                if not code:
                    continue
                for target in element.get("target") or []:
                    equivalence = target.get("equivalence") or "equivalent"
                    self.forward.setdefault((src, code), []).append(Match(
                        equivalence, tgt, target.get("code"), target.get("display"), url,
                        source_vs, target_vs, target.get("comment"),
                    ))  # fmt: skip
                    if target.get("code") and tgt:
                        self.backward.setdefault((tgt, target["code"]), []).append(Match(
                            _REVERSED.get(equivalence, equivalence), src or None, code,
                            element.get("display"), url, source_vs, target_vs,
                            target.get("comment"),
                        ))  # fmt: skip


_INDEXES: weakref.WeakKeyDictionary[object, dict[str, _Index]] = weakref.WeakKeyDictionary()


async def _fingerprint(store: ResourceStore, ctx: Context) -> tuple[int, str | None]:
    versions, total = await store.history(ctx, "ConceptMap", count=1)
    return total, versions[0].last_updated if versions else None


async def _index(store: ResourceStore, ctx: Context) -> _Index:
    per_tenant = _INDEXES.setdefault(store, {})
    fingerprint = await _fingerprint(store, ctx)
    index = per_tenant.get(ctx.tenant)
    if index is not None and index.fingerprint == fingerprint:
        return index
    index = _Index(fingerprint)
    query = parse_search("ConceptMap", [("_count", "1000")])
    while True:
        page = await store.search(ctx, query)
        for stored in page.resources:
            if stored.resource:
                index.add(stored.id, stored.resource)
        if page.next_cursor is None:
            break
        query = query.after(page.next_cursor)
    per_tenant[ctx.tenant] = index
    return index


def invalidate(store: ResourceStore) -> None:
    _INDEXES.pop(store, None)


async def translate(
    store: ResourceStore,
    ctx: Context,
    *,
    system: str,
    code: str,
    source: str | None = None,
    target: str | None = None,
    reverse: bool = False,
    url: str | None = None,
    target_system: str | None = None,
) -> list[Match]:
    """The mappings of `system`|`code` in every ConceptMap (or only the one with `url`,
    or those whose source / target value set is `source` / `target`), forward or, with
    `reverse`, from target back to source. Matches keep the ConceptMaps' order."""
    index = await _index(store, ctx)
    table = index.backward if reverse else index.forward
    found = table.get((system, code), [])
    if not found and not system:
        found = [m for (s, c), ms in table.items() if c == code for m in ms]
    out: list[Match] = []
    for match in found:
        if url is not None and match.concept_map != url.partition("|")[0]:
            continue
        if source is not None and match.source_value_set not in (source, source.partition("|")[0]):
            continue
        if target is not None and match.target_value_set not in (target, target.partition("|")[0]):
            continue
        if target_system is not None and match.system != target_system:
            continue
        out.append(match)
    return out
