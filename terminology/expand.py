"""ValueSet expansion from compose (R4 valueset.html#expansion): include/exclude by
system (whole system, listed concepts, or filters) and by other value sets, version
pinning, and cached member lists paged with a type-ahead filter.

An expansion's members are computed once per (value set, compose, pinned versions)
and kept in the concept store (`term_members`); `$expand` pages, filters and
translates displays over them, so a 100,000-concept value set is not rebuilt per call.
The cache is cleared when code systems are loaded or CodeSystem/ValueSet resources
change (terminology.service.sync).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from terminology import content, resources, ucum
from terminology.store import ExpandedConcept, Expansion, Filter, Member, TerminologyError

if TYPE_CHECKING:
    from fhir_server.storage.base import Context
    from terminology.service import TerminologyService

MAX_DEPTH = 8  # value sets including value sets; deeper is taken as a loop
MAX_UNPAGED = 10_000  # an $expand without count returns at most this many
# Members handled (selected, merged, intersected, excluded) across one top-level
# expansion, nested value sets included: a bound on the work a client's compose can ask
# for (break-new finding 19). The largest shipped system (ICD-10-CM, ~98,000 concepts)
# minus a few codes, reached through a few levels of value sets, stays well below it.
MAX_WORK = 2_000_000
# Merging more members than this runs in a worker thread (plain Python over Member
# lists, no database connection), so the event loop keeps serving (finding 14).
THREAD_AT = 20_000
_Key = tuple[Any, ...]


@dataclass(frozen=True)
class Pins:
    """Code system versions from $expand's system-version / force-system-version."""

    default: dict[str, str] = field(default_factory=dict)
    force: dict[str, str] = field(default_factory=dict)

    def version(self, system: str, given: str | None) -> str | None:
        return self.force.get(system) or given or self.default.get(system)


@dataclass(frozen=True)
class ExpandRequest:
    text: str | None = None
    offset: int = 0
    count: int | None = None
    active_only: bool = False
    language: str | None = None
    include_designations: bool = False
    include_definition: bool = False
    pins: Pins = Pins()
    exclude_systems: tuple[str, ...] = ()  # canonicals: system or system|version


def implicit_value_set(url: str) -> dict[str, Any] | None:
    """The ValueSet a `<system>?fhir_vs[=isa/<code>]` url stands for (R4 implicit value
    sets: all codes, or a subsumption subset)."""
    system, sep, rest = url.partition("?fhir_vs")
    if not sep:
        return None
    include: dict[str, Any] = {"system": system}
    if rest.startswith("=isa/"):
        include["filter"] = [{"property": "concept", "op": "is-a", "value": rest[5:]}]
    elif rest:
        return None
    return {"resourceType": "ValueSet", "url": url, "status": "active",
            "compose": {"include": [include]}}  # fmt: skip


async def find_value_set(
    service: TerminologyService, ctx: Context, canonical: str, where: str = "url"
) -> dict[str, Any]:
    url, version = resources.split_canonical(canonical)
    found = await resources.find(service.store, ctx, "ValueSet", url, version)
    if found:
        newest = max(found, key=lambda r: (str((r.resource or {}).get("version", "")),
                                           r.last_updated))  # fmt: skip
        return newest.resource or {}
    shipped = content.shipped_value_set(url, version)
    if shipped is not None:  # not stored (yet): its expansion names no resource id
        return {k: v for k, v in shipped.items() if k != "id"}
    implicit = implicit_value_set(url)
    if implicit is not None:
        system = implicit["compose"]["include"][0]["system"]
        if system != ucum.UCUM and await service.find_code_system(ctx, system) is None:
            # the client sent only this url: name it, not a compose element they never saw
            raise TerminologyError(404, "not-found", f"The value set {canonical} is not known: "
                                   f"code system {system} is not known", where)
        return implicit
    if url.endswith("/vs"):  # "all codes" value sets, e.g. http://loinc.org/vs
        system = await service.find_code_system(ctx, url[: -len("/vs")])
        if system is not None:
            return {"resourceType": "ValueSet", "url": url, "status": "active",
                    "compose": {"include": [{"system": system.url}]}}  # fmt: skip
    raise TerminologyError(404, "not-found", f"The value set {canonical} is not known", where)


def _key(member: Member) -> _Key:
    return ("c", member.cid) if member.cid is not None else (member.system, member.code)


def _split_systems(canonicals: tuple[str, ...]) -> dict[str, set[str | None]]:
    """exclude-system canonicals as {system: versions}; None stands for every version."""
    out: dict[str, set[str | None]] = {}
    for canonical in canonicals:
        system, sep, version = canonical.partition("|")
        out.setdefault(system, set()).add(version if sep and version else None)
    return out


def _merge(
    included: list[list[Member]], excluded: list[list[Member]]
) -> list[Member]:
    """The union of `included` (first occurrence wins, in order) minus `excluded`."""
    merged: dict[_Key, Member] = {}
    for members in included:
        for member in members:
            merged.setdefault(_key(member), member)
    gone: set[_Key] = set()
    for members in excluded:
        gone.update(_key(m) for m in members)
    return [m for k, m in merged.items() if k not in gone] if gone else list(merged.values())


def _intersect(members: list[Member], other: list[Member]) -> list[Member]:
    keys = {_key(m) for m in other}
    return [m for m in members if _key(m) in keys]


class _Builder:
    """Builds one top-level expansion. A value set referenced several times (by url and
    version) is expanded once (`_done`), and the members handled across the whole build
    are counted against MAX_WORK: past it a 422 too-costly naming the value set."""

    def __init__(
        self,
        service: TerminologyService,
        ctx: Context,
        pins: Pins,
        top: str,
        exclude_systems: tuple[str, ...] = (),
    ) -> None:
        self.service, self.ctx, self.pins = service, ctx, pins
        self.top = top
        self.excluded_systems = _split_systems(exclude_systems)
        self._done: dict[str, list[Member]] = {}
        self._work = 0

    def _charge(self, n: int, url: object) -> None:
        self._work += n
        if self._work > MAX_WORK:
            inner = "" if url in (None, self.top) else f" (while expanding {url})"
            raise TerminologyError(
                422, "too-costly",
                f"Expanding value set {self.top}{inner} handles more than {MAX_WORK} members "
                "across the value sets it includes; narrow its compose",
            )  # fmt: skip

    async def _combine(
        self, included: list[list[Member]], excluded: list[list[Member]]
    ) -> list[Member]:
        if sum(len(m) for m in included) + sum(len(m) for m in excluded) < THREAD_AT:
            return _merge(included, excluded)
        return await asyncio.to_thread(_merge, included, excluded)

    def _system_excluded(self, system: str | None, version: str | None) -> bool:
        versions = self.excluded_systems.get(system or "")
        return versions is not None and (None in versions or version in versions)

    async def members(self, value_set: dict[str, Any], depth: int = 0) -> list[Member]:
        if depth > MAX_DEPTH:
            raise TerminologyError(
                400, "processing",
                f"Value set {value_set.get('url')} includes value sets more than {MAX_DEPTH} "
                "deep (a loop?)",
            )  # fmt: skip
        compose = value_set.get("compose")
        if not isinstance(compose, dict):
            expansion = value_set.get("expansion") or {}
            if expansion.get("contains"):  # a stored, pre-expanded value set
                listed = _flatten(expansion["contains"])
                self._charge(len(listed), value_set.get("url"))
                return [Member(None, c.get("system"), c.get("version"), c.get("code"),
                               c.get("display"))
                        for c in listed if c.get("code")
                        and not self._system_excluded(c.get("system"), c.get("version"))]
            raise TerminologyError(
                400, "not-supported",
                f"Value set {value_set.get('url')} has no compose to expand", "ValueSet.compose",
            )  # fmt: skip
        url = value_set.get("url")
        parts: list[list[Member]] = []
        seen: set[str] = set()
        for n, include in enumerate(compose.get("include") or []):
            same = json.dumps(include, sort_keys=True, default=str)
            if same in seen:  # a repeated include adds nothing to the union
                continue
            seen.add(same)
            parts.append(await self.include(include, depth, f"ValueSet.compose.include[{n}]"))
            self._charge(len(parts[-1]), url)
        gone: list[list[Member]] = []
        for n, exclude in enumerate(compose.get("exclude") or []):
            gone.append(await self.include(exclude, depth, f"ValueSet.compose.exclude[{n}]"))
            self._charge(len(gone[-1]), url)
        if len(parts) == 1 and not gone:
            return parts[0]
        return await self._combine(parts, gone)

    async def include(self, include: dict[str, Any], depth: int, where: str) -> list[Member]:
        system = include.get("system")
        out: list[Member] | None = None
        if isinstance(system, str):
            out = await self._system_part(system, include, where)
        for canonical in include.get("valueSet") or []:
            members = await self._referenced(str(canonical), depth, where)
            if out is None:
                out = members
            else:
                self._charge(len(out) + len(members), canonical)
                out = _intersect(out, members)
        return out or []

    async def _referenced(self, canonical: str, depth: int, where: str) -> list[Member]:
        """The members of the value set `canonical` (url or url|version), expanded once
        per build however often it is referenced."""
        found = self._done.get(canonical)
        if found is None:
            value_set = await find_value_set(self.service, self.ctx, canonical, where)
            found = self._done[canonical] = await self.members(value_set, depth + 1)
        return found

    async def _system_part(self, system: str, include: dict[str, Any], where: str) -> list[Member]:
        version = self.pins.version(system, include.get("version"))
        listed = [c for c in include.get("concept") or [] if isinstance(c.get("code"), str)]
        filters = [
            Filter(f.get("property", ""), f.get("op", ""), str(f.get("value", "")))
            for f in include.get("filter") or []
        ]
        if system == ucum.UCUM:
            if not listed:
                raise TerminologyError(400, "too-costly", "UCUM cannot be enumerated", where)
            if self._system_excluded(system, None):
                return []
            return [Member(None, system, None, c["code"], c.get("display"))
                    for c in listed if ucum.is_valid(c["code"])]  # fmt: skip
        info = await self.service.find_code_system(self.ctx, system, version)
        if info is None:
            if listed and not filters:  # the value set says all there is to know
                if self._system_excluded(system, version):
                    return []
                return [Member(None, system, version, c["code"], c.get("display"))
                        for c in listed]  # fmt: skip
            known = "" if version is None else f" version {version}"
            raise TerminologyError(
                400, "not-found", f"The code system {system}{known} is not known", where
            )
        if self._system_excluded(system, info.version):  # $expand exclude-system
            return []
        if listed:
            ids = await self.service.concepts.codes_to_ids(
                self.ctx, info, [c["code"] for c in listed]
            )
            return [Member(ids[c["code"]], display=c.get("display"))
                    for c in listed if c["code"] in ids]  # fmt: skip
        cids = await self.service.concepts.select(self.ctx, info, filters)
        self._charge(len(cids), None)
        if len(cids) < THREAD_AT:
            return [Member(cid) for cid in cids]
        return await asyncio.to_thread(lambda: [Member(cid) for cid in cids])


def _flatten(contains: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in contains:
        out.append(item)
        out.extend(_flatten(item.get("contains") or []))
    return out


def _cache_key(
    value_set: dict[str, Any], pins: Pins, exclude_systems: tuple[str, ...] = ()
) -> str:
    text = json.dumps(
        {"url": value_set.get("url"), "version": value_set.get("version"),
         "compose": value_set.get("compose"), "expansion": value_set.get("expansion"),
         "pins": [sorted(pins.default.items()), sorted(pins.force.items())],
         **({"exclude-system": sorted(set(exclude_systems))} if exclude_systems else {})},
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()


async def expansion_of(
    service: TerminologyService,
    ctx: Context,
    value_set: dict[str, Any],
    pins: Pins = Pins(),
    exclude_systems: tuple[str, ...] = (),
) -> Expansion:
    """The cached member list of `value_set` (without the codes of `exclude_systems`),
    built on first use."""
    await service.sync(ctx)
    key = _cache_key(value_set, pins, exclude_systems)
    found = await service.concepts.expansion(ctx, key)
    if found is not None:
        return found
    top = str(value_set.get("url") or "(inline)")
    members = await _Builder(service, ctx, pins, top, exclude_systems).members(value_set)
    return await service.concepts.save_expansion(ctx, key, members)


async def expand_all(
    service: TerminologyService, ctx: Context, value_set: dict[str, Any]
) -> list[ExpandedConcept]:
    expansion = await expansion_of(service, ctx, value_set)
    _, concepts = await service.concepts.expansion_page(ctx, expansion)
    return concepts


def _active_only(value_set: dict[str, Any], request: ExpandRequest) -> bool:
    return request.active_only or (value_set.get("compose") or {}).get("inactive") is False


async def expand(
    service: TerminologyService, ctx: Context, value_set: dict[str, Any], request: ExpandRequest
) -> dict[str, Any]:
    """The ValueSet with its `expansion` (one page of it when `count` is given)."""
    expansion = await expansion_of(service, ctx, value_set, request.pins,
                                   request.exclude_systems)  # fmt: skip
    count = request.count
    if count is None and not request.text and expansion.total > MAX_UNPAGED:
        raise TerminologyError(
            400, "too-costly",
            f"The value set has {expansion.total} concepts; page it with count and offset, or "
            "narrow it with filter",
        )  # fmt: skip
    total, concepts = await service.concepts.expansion_page(
        ctx, expansion, text=request.text, active_only=_active_only(value_set, request),
        offset=request.offset, count=count if count is not None else MAX_UNPAGED,
        language=request.language,
    )  # fmt: skip
    contains = [_contains(c, request) for c in concepts]
    parameters: list[dict[str, Any]] = [{"name": "offset", "valueInteger": request.offset}]
    if count is not None:
        parameters.append({"name": "count", "valueInteger": count})
    if request.text:
        parameters.append({"name": "filter", "valueString": request.text})
    if request.active_only:
        parameters.append({"name": "activeOnly", "valueBoolean": True})
    if request.include_designations:  # it changes the expansion: R4 says list it
        parameters.append({"name": "includeDesignations", "valueBoolean": True})
    if request.language:
        parameters.append({"name": "displayLanguage", "valueCode": request.language})
    for system, version in {**request.pins.default, **request.pins.force}.items():
        parameters.append({"name": "version", "valueUri": f"{system}|{version}"})
    for canonical in dict.fromkeys(request.exclude_systems):
        parameters.append({"name": "exclude-system", "valueCanonical": canonical})
    out = {k: v for k, v in value_set.items() if k not in ("expansion", "text")}
    out["resourceType"] = "ValueSet"
    out["expansion"] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total": total,
        "offset": request.offset,
        "parameter": parameters,
        **({"contains": contains} if contains else {}),
    }
    return out


def _contains(concept: ExpandedConcept, request: ExpandRequest) -> dict[str, Any]:
    item: dict[str, Any] = {"system": concept.system}
    if concept.version:
        item["version"] = concept.version
    if not concept.active:
        item["inactive"] = True
    item["code"] = concept.code
    if concept.display:
        item["display"] = concept.display
    if request.include_designations and concept.designations:
        item["designation"] = [designation_json(d) for d in concept.designations]
    return item


def designation_json(d: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if d.language:
        out["language"] = d.language
    if d.use_code:
        out["use"] = {k: v for k, v in (("system", d.use_system), ("code", d.use_code)) if v}
    out["value"] = d.value
    return out


async def contains(
    service: TerminologyService,
    ctx: Context,
    value_set: dict[str, Any],
    system: str | None,
    code: str,
    pins: Pins = Pins(),
) -> ExpandedConcept | None:
    """The concept of the value set with this system and code, if it is a member."""
    expansion = await expansion_of(service, ctx, value_set, pins)
    found = await service.concepts.expansion_find(ctx, expansion, system, code)
    if found is not None and not found.active and _active_only(value_set, ExpandRequest()):
        return None
    return found
