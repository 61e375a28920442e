"""The terminology service over a resource store: code systems (loaded ones and
CodeSystem resources carrying concepts), value sets and UCUM, for the FHIR operations
and the search modifiers :in / :not-in / :above / :below.

    service = terminology_service(store)            # one per ResourceStore
    system = await service.code_system(ctx, url, version)   # SystemInfo (400 if unknown)
    detail = await service.lookup(ctx, url, code, version)   # ConceptDetail (404 if unknown)
    check = await service.validate_code(ctx, url, code, version=None, display=None)
    await service.subsumes(ctx, url, a, b)                 # "subsumes" | ...
    await service.codes(ctx, value_set_url)                # {(system, code)} of an expansion

CodeSystem resources that carry concepts (small ones POSTed by users, the spec's
examples) are loaded into the concept store lazily: each call first compares the
CodeSystem/ValueSet history (version count and newest instant: one indexed query
each) with what it saw last; when they changed, the CodeSystems changed since are
(re)loaded or dropped, and cached expansions are cleared. So writes by any path or any
process are seen on the next call, with no hook in the write path.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from search.query import parse_search
from terminology import content, ucum
from terminology.model import CodeSystemHeader, Concept, Designation
from terminology.store import (
    ConceptDetail,
    ConceptStore,
    Subsumption,
    SystemInfo,
    TerminologyError,
    concept_store,
)

if TYPE_CHECKING:
    from fhir_server.storage.base import Context, ResourceStore

_WATCHED = ("CodeSystem", "ValueSet")


@dataclass(frozen=True)
class Validation:
    result: bool
    message: str | None
    display: str | None
    system: str | None = None
    version: str | None = None
    code: str | None = None


def resource_source(resource_id: str, version_id: str) -> str:
    return f"resource:{resource_id}/{version_id}"


def concepts_of(resource: dict[str, Any]) -> list[Concept]:
    """CodeSystem.concept (nested concepts are children: is-a parents by nesting)."""
    out: list[Concept] = []

    def walk(items: list[dict[str, Any]], parent: str | None) -> None:
        for item in items:
            code = item.get("code")
            if not isinstance(code, str):
                continue
            props: dict[str, list[object]] = {}
            parents = [parent] if parent else []
            active = True
            for prop in item.get("property") or []:
                name = prop.get("code")
                value = next((v for k, v in prop.items() if k.startswith("value")), None)
                if isinstance(value, dict):  # valueCoding
                    value = f"{value.get('system', '')}|{value.get('code', '')}"
                if name == "parent" and isinstance(value, str):
                    parents.append(value)
                    continue
                if name in ("inactive",) and value is True:
                    active = False
                if name == "status" and value in ("retired", "inactive"):
                    active = False
                if name and value is not None:
                    props.setdefault(name, []).append(value)
            designations = tuple(
                Designation(d["value"], d.get("language"), (d.get("use") or {}).get("system"),
                            (d.get("use") or {}).get("code"))
                for d in item.get("designation") or [] if isinstance(d.get("value"), str)
            )  # fmt: skip
            out.append(Concept(
                code, item.get("display"), item.get("definition"), designations,
                tuple(dict.fromkeys(parents)), {k: tuple(v) for k, v in props.items()}, active,
            ))  # fmt: skip
            walk(item.get("concept") or [], code)

    walk(resource.get("concept") or [], None)
    return out


def header_of(resource: dict[str, Any]) -> CodeSystemHeader:
    return CodeSystemHeader(
        url=resource["url"], version=resource.get("version"),
        name=resource.get("name") or resource.get("id") or "CodeSystem",
        title=resource.get("title"), status=resource.get("status", "active"),
        content=resource.get("content", "complete"),
        hierarchy_meaning=resource.get("hierarchyMeaning") or "is-a",
        copyright=resource.get("copyright"), language=resource.get("language"),
    )  # fmt: skip


class TerminologyService:
    def __init__(self, store: ResourceStore) -> None:
        self.store = store
        self.concepts: ConceptStore = concept_store(store)
        self._seen: dict[str, tuple[tuple[int, str | None], ...]] = {}

    # -- keeping the concept store in step with the resources -------------------

    async def _fingerprint(self, ctx: Context) -> tuple[tuple[int, str | None], ...]:
        prints = []
        for resource_type in _WATCHED:
            versions, total = await self.store.history(ctx, resource_type, count=1)
            prints.append((total, versions[0].last_updated if versions else None))
        return tuple(prints)

    async def sync(self, ctx: Context) -> None:
        fingerprint = await self._fingerprint(ctx)
        seen = self._seen.get(ctx.tenant)
        if seen == fingerprint:
            return
        if seen is None and await self.concepts.sync_mark(ctx) == repr(fingerprint):
            self._seen[ctx.tenant] = fingerprint  # a restart: nothing changed meanwhile
            return
        if seen is None or seen[0] != fingerprint[0]:
            await self._sync_code_systems(ctx)
        await self.concepts.clear_expansions(ctx)
        # the sync's own writes (a loaded CodeSystem's stand-in resource) are part of it
        fingerprint = await self._fingerprint(ctx)
        await self.concepts.set_sync_mark(ctx, repr(fingerprint))
        self._seen[ctx.tenant] = fingerprint

    async def _sync_code_systems(self, ctx: Context) -> None:
        loaded = {s.source: s for s in await self.concepts.systems(ctx)}
        from_resources = {src for src in loaded if src.startswith("resource:")}
        current: set[str] = set()
        query = parse_search("CodeSystem", [("_count", "500")])
        while True:
            page = await self.store.search(ctx, query)
            for stored in page.resources:
                body = stored.resource or {}
                if not body.get("concept") or not isinstance(body.get("url"), str):
                    continue
                source = resource_source(stored.id, str(stored.version))
                current.add(source)
                if source not in loaded:
                    await self.concepts.load_code_system(
                        ctx, header_of(body), concepts_of(body), source=source,
                        keep_resource=False,
                    )  # fmt: skip
            if page.next_cursor is None:
                break
            query = query.after(page.next_cursor)
        for source in from_resources - current:
            info = loaded[source]  # only that resource's concepts: never a load beside it
            await self.concepts.drop_code_system(ctx, info.url, info.version, source=source)

    # -- code systems --------------------------------------------------------------

    async def find_code_system(
        self, ctx: Context, url: str, version: str | None = None
    ) -> SystemInfo | None:
        await self.sync(ctx)
        found = await self.concepts.system(ctx, url, version)
        if (found is None or found.source != "load") and content.source_of(url) is not None:
            # shipped content takes precedence over a client's CodeSystem of the same url
            if await content.ensure_code_system(self.concepts, ctx, url):
                found = await self.concepts.system(ctx, url, version)  # loaded just now
        return found

    async def code_system(
        self, ctx: Context, url: str, version: str | None = None, where: str = "system"
    ) -> SystemInfo:
        found = await self.find_code_system(ctx, url, version)
        if found is not None:
            return found
        if version is not None and await self.concepts.system(ctx, url) is not None:
            raise TerminologyError(
                404, "not-found", f"Version '{version}' of code system {url} is not known", where
            )
        raise TerminologyError(404, "not-found", f"The code system {url} is not known", where)

    async def lookup(
        self, ctx: Context, url: str, code: str, version: str | None = None
    ) -> tuple[SystemInfo, ConceptDetail]:
        if url == ucum.UCUM:
            return ucum.system_info(), ucum.lookup(code)
        system = await self.code_system(ctx, url, version)
        detail = await self.concepts.concept(ctx, system, code)
        if detail is None:
            raise TerminologyError(
                404, "not-found", f"The code '{code}' is not in code system {url}", "code"
            )
        return system, detail

    async def validate_code(
        self,
        ctx: Context,
        url: str,
        code: str,
        version: str | None = None,
        display: str | None = None,
    ) -> Validation:
        """$validate-code against a code system: unknown codes and wrong displays are a
        result of false with a message, not an error; an unknown system is (404)."""
        if url == ucum.UCUM:
            return ucum.validate(code, display)
        system = await self.code_system(ctx, url, version)
        detail = await self.concepts.concept(ctx, system, code)
        if detail is None:
            return Validation(False, f"Unknown code '{code}' in code system '{url}'", None,
                              url, system.version, code)  # fmt: skip
        return check_display(detail.concept, display, url, system.version)

    async def subsumes(
        self, ctx: Context, url: str, code_a: str, code_b: str, version: str | None = None
    ) -> Subsumption:
        system = await self.code_system(ctx, url, version)
        for code, where in ((code_a, "codeA"), (code_b, "codeB")):
            if await self.concepts.concept(ctx, system, code) is None:
                raise TerminologyError(
                    400, "invalid", f"The code '{code}' is not in code system {url}", where
                )
        return await self.concepts.subsumes(ctx, system, code_a, code_b)

    async def below(self, ctx: Context, url: str, code: str) -> set[str] | None:
        """`code` and its descendants (token :below); None when the system is not held,
        an empty set when `code` is not in it."""
        system = await self.find_code_system(ctx, url)
        if system is None:
            return None
        if await self.concepts.concept(ctx, system, code) is None:
            return set()
        return await self.concepts.descendants(ctx, system, code) | {code}

    async def above(self, ctx: Context, url: str, code: str) -> set[str] | None:
        """`code` and its ancestors (token :above); None when the system is not held,
        an empty set when `code` is not in it."""
        system = await self.find_code_system(ctx, url)
        if system is None:
            return None
        if await self.concepts.concept(ctx, system, code) is None:
            return set()
        return await self.concepts.ancestors(ctx, system, code) | {code}

    async def codes(self, ctx: Context, value_set: str) -> set[tuple[str, str]]:
        """(system, code) of every concept of the value set with this canonical url
        (token :in / :not-in). 404 TerminologyError for an unknown value set."""
        from terminology.expand import expand_all, find_value_set

        resource = await find_value_set(self, ctx, value_set, where="value set")
        return {(c.system, c.code) for c in await expand_all(self, ctx, resource)}


def check_display(
    concept: Concept, display: str | None, url: str, version: str | None
) -> Validation:
    if display is None or display == concept.display or any(
        d.value == display for d in concept.designations
    ):
        return Validation(True, None, concept.display, url, version, concept.code)
    folded = display.strip().casefold()
    if folded == (concept.display or "").casefold() or any(
        d.value.casefold() == folded for d in concept.designations
    ):
        return Validation(True, None, concept.display, url, version, concept.code)
    return Validation(
        False,
        f"The display '{display}' is not a valid display for the code '{concept.code}' in "
        f"code system '{url}'; the display is '{concept.display}'",
        concept.display, url, version, concept.code,
    )  # fmt: skip


_SERVICES: weakref.WeakKeyDictionary[object, TerminologyService] = weakref.WeakKeyDictionary()


def terminology_service(store: ResourceStore) -> TerminologyService:
    found = _SERVICES.get(store)
    if found is None:
        found = _SERVICES[store] = TerminologyService(store)
    return found
