"""Standardisation of incoming Observations: local codes to LOINC through the ConceptMap
of their source, and quantities to a canonical UCUM unit. Every adapter (HL7v2, CSV)
calls one function, `standardise_observation`.

Source ConceptMaps
    A ConceptMap applies to a source (a hospital, a department, an instrument) when its
    `useContext` names it::

        {"code": {"system": "http://fhir-fusion.org/CodeSystem/usage-context-type",
                  "code": "data-source"},
         "valueCodeableConcept": {"coding": [{
             "system": "http://fhir-fusion.org/CodeSystem/data-source", "code": "SFAC"}]}}

    HL7v2 names its source by MSH-4 (sending facility) and MSH-3 (sending application):
    the maps of "SFAC/SIMHOSP" are tried first, then those of "SFAC", then "SIMHOSP". The
    CSV adapter names it by its mapping (source) name. A group whose target is LOINC (or
    any other standard system) maps codes; `group.source` is the local code system
    (HL7v2: urn:fhir-fusion:hl7v2:codesystem:<OBX-3.3>; a group without one matches any
    system). A group whose target is http://unitsofmeasure.org maps the source's unit
    texts ("MMOLL") to UCUM codes ("mmol/L"). Only the equivalences equivalent, equal,
    wider and subsumes are used: the standard code must not say more than the local one.

What an Observation gains (nothing it had is changed or removed)
    - code.coding: the standard Coding after the original, with userSelected false.
    - valueQuantity (and component.valueQuantity): system/code when the source's unit map
      names the UCUM code of a unit sent as text, and the extension
      http://fhir-fusion.org/StructureDefinition/canonical-quantity holding the value in
      the canonical unit of its kind (docs/terminology-loaders.md).

Problems are warnings, never a reason to lose data: a LOINC code whose check digit is
wrong, a unit that is not UCUM, a ConceptMap whose target is mapped again (a chain) or
leads back to its source (a loop), a target code the loaded code system does not have.
They are collected with the unmapped codes in a `StandardisationReport`, which the
adapter keeps with the input (`details()` goes into Translation.details["terminology"],
stored with the raw input; `fhir-fusion terminology unmapped` lists them).

ConceptMaps are read from the store by `load_source_maps` (cached per store and tenant,
reloaded when the ConceptMap history changes) and compiled to dictionaries, so applying
them costs a few dictionary lookups per Observation. The HL7v2 translator is synchronous
and does not see the store: it uses the maps installed by `refresh` (the server and the
`ingest` command call it at start, and `keep_refreshed` keeps them current).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fhir_server.errors import Issue, operation_outcome
from terminology.loaders.loinc import check_digit_ok
from terminology.standardise_units import canonical_quantity, ucum_problem

if TYPE_CHECKING:
    from fhir_server.storage.base import Context, ResourceStore

log = logging.getLogger(__name__)

JSON = dict[str, Any]

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CANONICAL_QUANTITY = "http://fhir-fusion.org/StructureDefinition/canonical-quantity"
CONTEXT_TYPE = "http://fhir-fusion.org/CodeSystem/usage-context-type"
CONTEXT_CODE = "data-source"
SOURCE_SYSTEM = "http://fhir-fusion.org/CodeSystem/data-source"
# R4 concept-map-equivalence values under which the target may stand for the source
USABLE = frozenset({"equivalent", "equal", "wider", "subsumes"})


@dataclass(frozen=True)
class Target:
    system: str
    code: str
    display: str | None
    concept_map: str


@dataclass
class SourceMap:
    """One ConceptMap compiled: (source system or None, code) -> Target, unit text -> UCUM
    code, and the codes whose mapping is broken with the reason."""

    url: str
    sources: tuple[str, ...]
    codes: dict[tuple[str | None, str], Target] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    broken: dict[tuple[str | None, str], str] = field(default_factory=dict)
    broken_units: dict[str, str] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)

    def find(self, system: str | None, code: str) -> Target | str | None:
        """The target of a code, the reason its mapping is broken, or None."""
        for key in ((system, code), (None, code)):
            if key in self.broken:
                return self.broken[key]
            found = self.codes.get(key)
            if found is not None:
                return found
        return None


def map_sources(concept_map: JSON) -> tuple[str, ...]:
    """The sources a ConceptMap's useContext names (none: not a source map)."""
    found = []
    for context in concept_map.get("useContext") or []:
        code = context.get("code") or {}
        if code.get("system") != CONTEXT_TYPE or code.get("code") != CONTEXT_CODE:
            continue
        concept = context.get("valueCodeableConcept") or {}
        found += [c["code"] for c in concept.get("coding") or []
                  if c.get("system") == SOURCE_SYSTEM and c.get("code")]
    return tuple(found)


def compile_map(concept_map: JSON, resource_id: str | None = None) -> SourceMap | None:
    """A ConceptMap as a `SourceMap`; None when it names no source."""
    sources = map_sources(concept_map)
    if not sources:
        return None
    name = concept_map.get("url") or f"ConceptMap/{resource_id or concept_map.get('id', '?')}"
    compiled = SourceMap(name, sources)
    edges: dict[tuple[str | None, str], tuple[str, str]] = {}
    for number, group in enumerate(concept_map.get("group") or []):
        source, target = group.get("source") or None, group.get("target") or ""
        for element in group.get("element") or []:
            code = element.get("code")
            chosen = _usable_target(element)
            if not code or chosen is None:
                continue
            if target == UCUM:
                problem = ucum_problem(chosen["code"])
                if problem:
                    reason = f"ConceptMap {name} maps unit {code!r} to a non-UCUM code ({problem})"
                    compiled.broken_units[code] = reason
                    compiled.issues.append(_warning("code-invalid", reason,
                                                    f"ConceptMap.group[{number}]"))
                else:
                    compiled.units[code] = chosen["code"]
                continue
            if not target:
                continue
            if target == LOINC and not check_digit_ok(chosen["code"]):
                compiled.broken[(source, code)] = (
                    f"ConceptMap {name} maps {code!r} to {chosen['code']!r}, which is not a "
                    "LOINC code (check digit)")
                continue
            edges[(source, code)] = (target, chosen["code"])
            compiled.codes[(source, code)] = Target(target, chosen["code"],
                                                    chosen.get("display"), name)
    _find_loops_and_chains(compiled, edges)
    compiled.issues += [_warning("business-rule", reason) for reason in
                        dict.fromkeys(compiled.broken.values())]
    return compiled


def _usable_target(element: JSON) -> JSON | None:
    for target in element.get("target") or []:
        if target.get("code") and (target.get("equivalence") or "equivalent") in USABLE:
            return target  # type: ignore[no-any-return]
    return None


def _find_loops_and_chains(compiled: SourceMap,
                           edges: dict[tuple[str | None, str], tuple[str, str]]) -> None:
    """A target that is itself mapped makes a chain (a -> b -> c) or a loop (a -> b -> a).
    Maps are applied one step, as $translate does, so neither is followed: the code is
    reported instead of getting a standard code the map's author did not state."""

    def step(key: tuple[str | None, str]) -> tuple[str | None, str] | None:
        target = edges.get(key)
        if target is None:
            return None
        for mapped_again in (target, (None, target[1])):
            if mapped_again in edges:
                return mapped_again
        return None

    for start in list(edges):
        path = [start]
        current = step(start)
        while current is not None and current not in path:
            path.append(current)
            current = step(current)
        if len(path) == 1:
            continue
        text = " -> ".join(code for _, code in path)
        if current is not None:
            reason = (f"ConceptMap {compiled.url} has a loop ({text} -> {current[1]}); "
                      f"{start[1]!r} is left unmapped")
        else:
            last = edges[path[-1]][1]
            reason = (f"ConceptMap {compiled.url} has a chain ({text} -> {last}); maps are "
                      f"applied one step, so {start[1]!r} is left unmapped")
        compiled.broken[start] = reason
        compiled.codes.pop(start, None)


class SourceMaps:
    """The compiled ConceptMaps of every source; `for_sources` is cached."""

    def __init__(self, concept_maps: Iterable[tuple[str | None, JSON]] = (),
                 fingerprint: object = None) -> None:
        self.fingerprint = fingerprint
        self.by_source: dict[str, list[SourceMap]] = {}
        self.issues: list[Issue] = []
        for resource_id, resource in concept_maps:
            self.add(resource, resource_id)
        self._chosen: dict[tuple[str, ...], tuple[SourceMap, ...]] = {}

    def add(self, concept_map: JSON, resource_id: str | None = None) -> SourceMap | None:
        compiled = compile_map(concept_map, resource_id)
        if compiled is not None:
            self.issues += compiled.issues
            for source in compiled.sources:
                self.by_source.setdefault(source, []).append(compiled)
                self._chain_across(source)
            self._chosen = {}
        return compiled

    def _chain_across(self, source: str) -> None:
        """A chain or loop through two ConceptMaps of one source (a -> b in one, b -> ...
        in the other) is broken the same way as inside one map."""
        maps = self.by_source[source]
        if len(maps) < 2:
            return
        for first in maps:
            for key, target in list(first.codes.items()):
                for other in maps:
                    if other is first:
                        continue
                    again = (target.system, target.code)
                    if any(k in other.codes or k in other.broken
                           for k in (again, (None, target.code))):
                        reason = (f"ConceptMap {first.url} maps {key[1]!r} to "
                                  f"{target.code!r}, which ConceptMap {other.url} of the same "
                                  f"source maps again (a chain or loop); maps are applied one "
                                  f"step, so {key[1]!r} is left unmapped")
                        first.broken[key] = reason
                        del first.codes[key]
                        issue = _warning("business-rule", reason)
                        first.issues.append(issue)
                        self.issues.append(issue)
                        break

    def for_sources(self, sources: tuple[str, ...]) -> tuple[SourceMap, ...]:
        found = self._chosen.get(sources)
        if found is None:
            found = tuple(m for s in sources for m in self.by_source.get(s, ()))
            self._chosen[sources] = found
        return found


@dataclass
class StandardisationReport:
    """What standardisation did to the Observations of one input."""

    sources: tuple[str, ...] = ()
    mapped: int = 0
    canonical: int = 0
    unmapped: dict[tuple[str, str], JSON] = field(default_factory=dict)
    issues: dict[tuple[str, str, tuple[str, ...]], Issue] = field(default_factory=dict)

    def warn(self, code: str, text: str, where: str | None = None) -> None:
        issue = _warning(code, text, where)
        self.issues.setdefault((code, text, issue.expression), issue)

    def outcome(self) -> JSON | None:
        """The warnings as an OperationOutcome, or None when there are none."""
        return operation_outcome(list(self.issues.values())) if self.issues else None

    def details(self) -> JSON | None:
        """For Translation.details["terminology"] (kept with the input); None when no
        Observation was looked at."""
        if not (self.mapped or self.canonical or self.unmapped or self.issues):
            return None
        out: JSON = {"sources": list(self.sources), "mapped": self.mapped,
                     "canonical_quantities": self.canonical}
        if self.unmapped:
            out["unmapped"] = list(self.unmapped.values())
        outcome = self.outcome()
        if outcome:
            out["outcome"] = outcome
        return out


def _warning(code: str, text: str, where: str | None = None) -> Issue:
    return Issue(code, text, severity="warning", expression=(where,) if where else ())


# --- applying the maps ---------------------------------------------------------------

_installed = SourceMaps()


def installed_maps() -> SourceMaps:
    """The maps synchronous translators use (see `refresh`)."""
    return _installed


def install(maps: SourceMaps) -> None:
    global _installed
    _installed = maps


def standardise_observation(observation: JSON, sources: str | Sequence[str], *,
                            maps: SourceMaps | None = None,
                            report: StandardisationReport | None = None,
                            ) -> StandardisationReport:
    """Add the standard coding and canonical quantities to `observation` (in place).

    `sources` names where the data came from, most specific first (HL7v2:
    ["SFAC/SIMHOSP", "SFAC", "SIMHOSP"]; CSV: [mapping name]). `maps` defaults to the
    installed maps; a store-aware caller passes `await load_source_maps(store, ctx)`.
    Pass the same `report` for every Observation of one input, then keep
    `report.details()` with the input. Never raises for bad terminology: it warns.
    """
    names = (sources,) if isinstance(sources, str) else tuple(sources)
    if report is None:
        report = StandardisationReport(names)
    elif not report.sources:
        report.sources = names
    chosen = (maps or _installed).for_sources(names)
    _standardise_code(observation.get("code"), "Observation.code", chosen, report)
    _standardise_quantity(observation.get("valueQuantity"), "Observation.valueQuantity",
                          chosen, report, names)
    for number, component in enumerate(observation.get("component") or []):
        where = f"Observation.component[{number}]"
        _standardise_code(component.get("code"), f"{where}.code", chosen, report)
        _standardise_quantity(component.get("valueQuantity"), f"{where}.valueQuantity",
                              chosen, report, names)
    return report


def _standardise_code(concept: JSON | None, where: str, chosen: tuple[SourceMap, ...],
                      report: StandardisationReport) -> None:
    codings = (concept or {}).get("coding") or []
    loinc = [(n, c) for n, c in enumerate(codings) if c.get("system") == LOINC]
    if loinc:
        for number, coding in loinc:
            code = coding.get("code") or ""
            if not check_digit_ok(code):
                report.warn("code-invalid", f"{code!r} is not a LOINC code (check digit)",
                            f"{where}.coding[{number}]")
        return
    local = [c for c in codings if c.get("code")]
    if not local:
        return
    for coding in local:  # a CWE's alternate code may be the one a map knows
        for source_map in chosen:
            found = source_map.find(coding.get("system"), coding["code"])
            if isinstance(found, Target):
                codings.append({"system": found.system, "code": found.code,
                                **({"display": found.display} if found.display else {}),
                                "userSelected": False})
                report.mapped += 1
                return
            if isinstance(found, str):
                report.warn("business-rule", found, where)
                break
    system, code = local[0].get("system"), local[0]["code"]
    key = (system or "", code)
    entry = report.unmapped.get(key)
    if entry is None:
        entry = report.unmapped[key] = {"system": system or "", "code": code, "count": 0}
        if local[0].get("display"):
            entry["display"] = local[0]["display"]
    entry["count"] += 1


def _standardise_quantity(quantity: JSON | None, where: str, chosen: tuple[SourceMap, ...],
                          report: StandardisationReport, names: tuple[str, ...]) -> None:
    if not quantity or not isinstance(quantity.get("value"), (Decimal, int, float)):
        return
    code = quantity.get("code") if quantity.get("system") == UCUM else None
    if code is None:
        text = quantity.get("unit") or quantity.get("code")
        if not text:
            return
        mapped = next((m.units[text] for m in chosen if text in m.units), None)
        broken = next((m.broken_units[text] for m in chosen if text in m.broken_units), None)
        if mapped is None and broken is not None:
            report.warn("code-invalid", broken, where)
            return
        if mapped is None:
            source = names[0] if names else "this source"
            report.warn("code-invalid", f"unit {text!r} is not UCUM and the unit map of "
                        f"{source} does not name it", where)
            return
        quantity["system"], quantity["code"] = UCUM, mapped
        code = mapped
    problem = ucum_problem(code)
    if problem:
        report.warn("code-invalid", problem, f"{where}.code")
        return
    value = quantity["value"]
    value = value if isinstance(value, Decimal) else Decimal(str(value))
    found = canonical_quantity(value, code)
    if found is None:
        return  # valid UCUM, but arbitrary ([IU]/L): comparable only with itself
    canonical, unit = found
    if unit == code and canonical == value:
        return  # already canonical: no extension (docs/terminology-loaders.md)
    extensions = [e for e in quantity.get("extension") or [] if e.get("url") != CANONICAL_QUANTITY]
    extensions.append({"url": CANONICAL_QUANTITY, "valueQuantity": {
        "value": canonical, "unit": unit, "system": UCUM, "code": unit}})
    quantity["extension"] = extensions
    report.canonical += 1


# --- loading the maps from the store -------------------------------------------------

_CACHE: weakref.WeakKeyDictionary[object, dict[str, SourceMaps]] = weakref.WeakKeyDictionary()


async def load_source_maps(store: ResourceStore, ctx: Context) -> SourceMaps:
    """The source ConceptMaps of the tenant, compiled; reread only when the ConceptMap
    history has changed since (one indexed query per call otherwise)."""
    from search.query import parse_search

    versions, total = await store.history(ctx, "ConceptMap", count=1)
    fingerprint = (total, versions[0].last_updated if versions else None)
    per_tenant = _CACHE.setdefault(store, {})
    cached = per_tenant.get(ctx.tenant)
    if cached is not None and cached.fingerprint == fingerprint:
        return cached
    found: list[tuple[str | None, JSON]] = []
    query = parse_search("ConceptMap", [("context-type", f"{CONTEXT_TYPE}|{CONTEXT_CODE}"),
                                        ("_count", "500")])
    while True:
        page = await store.search(ctx, query)
        found += [(r.id, r.resource) for r in page.resources
                  if r.resource and map_sources(r.resource)]
        if page.next_cursor is None:
            break
        query = query.after(page.next_cursor)
    maps = SourceMaps(found, fingerprint)
    await _check_targets(store, ctx, maps)
    if maps.issues:  # codes, units and map urls only: no patient data
        log.warning("source ConceptMaps: %d problem(s), e.g. %s", len(maps.issues),
                    maps.issues[0].diagnostics)
    per_tenant[ctx.tenant] = maps
    return maps


async def _check_targets(store: ResourceStore, ctx: Context, maps: SourceMaps) -> None:
    """Target codes a loaded code system does not have are broken mappings (a code not
    in its system); systems not loaded are taken on trust."""
    try:
        from terminology.store import concept_store

        concepts = concept_store(store)
    except Exception:  # noqa: BLE001 - no concept store for this backend: nothing to check
        return
    compiled = {id(m): m for ms in maps.by_source.values() for m in ms}.values()
    by_system: dict[str, set[str]] = {}
    for source_map in compiled:
        for target in source_map.codes.values():
            by_system.setdefault(target.system, set()).add(target.code)
    for system, codes in by_system.items():
        info = await concepts.system(ctx, system)
        if info is None or info.content not in ("complete", ""):
            continue
        known = await concepts.codes_to_ids(ctx, info, codes)
        for source_map in compiled:
            for key, target in list(source_map.codes.items()):
                if target.system == system and target.code not in known:
                    reason = (f"ConceptMap {source_map.url} maps {key[1]!r} to {target.code!r}, "
                              f"which is not in {system} (version {info.version or 'loaded'})")
                    source_map.broken[key] = reason
                    del source_map.codes[key]
                    issue = _warning("code-invalid", reason)
                    source_map.issues.append(issue)
                    maps.issues.append(issue)


async def refresh(store: ResourceStore, ctx: Context) -> SourceMaps:
    """Load the source maps of `store` and install them for synchronous translators."""
    maps = await load_source_maps(store, ctx)
    install(maps)
    return maps


async def keep_refreshed(store: ResourceStore, ctx: Context, interval: float = 5.0) -> None:
    """Refresh the installed maps every `interval` seconds until cancelled."""
    while True:
        try:
            await refresh(store, ctx)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep the maps we have; try again later
            log.exception("could not reload the source ConceptMaps")
        await asyncio.sleep(interval)
