"""Custom search parameters: SearchParameter resources created at run time
(R4 searchparameter.html) that become searchable after `$reindex`.

A SearchParameter stored on the server is checked (`definition`: code, base, type and
expression, else a 400 naming the element) and registered here as *pending*: from then
on every write of a resource of one of its base types is indexed for it too (search
.extract's converter for its type, on the getter search.paths compiles: the pure Python
fast path for simple paths, fhirpathpy otherwise), but resources stored before are not.
A search on a pending parameter is therefore a 400 "not yet indexed, run $reindex"
rather than a silently incomplete answer. A completed `$reindex` covering its base types
marks it *indexed*, and searches on it work like on any R4 parameter.

Two hooks, one call each: search.query consults `parameters` when it looks parameters
up; the SQLite index calls `add_rows` after search.extract.extract.

The registry is per process and server-wide (not per tenant): the store loads it from
its own file when it opens (fhir_server.storage.sqlite_reindex.load_registry), so one
process serves one store, as `fhir-fusion serve` does. Several processes can share one
store (two `serve` on one SQLite file, API workers on MongoDB), so the store keeps the
registry in step with what is stored (break-new finding 7): SQLite sets a `refresher`
that compares a change marker in the file before each search and inside each write
transaction, MongoDB workers reload on an interval (fhir_server.storage.registry_sync).
A SearchParameter written in a transaction that later rolls back stays registered as
pending until the next `$reindex` or restart reloads the registry from the store.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from conformance.definitions import RESOURCE_TYPES, SearchParamDef, search_parameters
from fhir_server.errors import FHIRError, Issue
from search.paths import compile_path

if TYPE_CHECKING:
    from search.extract import IndexRows

_CODE = re.compile(r"[A-Za-z][A-Za-z0-9\-]{0,63}")


@dataclass(frozen=True)
class CustomParam:
    resource_id: str  # of the SearchParameter resource
    version: int
    code: str
    bases: tuple[str, ...]
    type: str
    expression: str
    url: str
    description: str
    targets: tuple[str, ...] = ()  # of a reference parameter: SearchParameter.target

    def as_definition(self) -> SearchParamDef:
        return SearchParamDef(
            code=self.code, type=self.type, expression=self.expression, targets=self.targets,
            url=self.url, description=self.description,
        )  # fmt: skip


def _invalid(path: str, diagnostics: str) -> FHIRError:
    return FHIRError(400, [Issue("invalid", diagnostics, expression=(path,))])


def _converters() -> Mapping[str, Callable[[IndexRows, str, Any], None]]:
    from search import extract

    # search.extract's per-type converters (private there; read, never changed here)
    return getattr(extract, "_CONVERTERS")  # noqa: B009 - a private table, on purpose


def _balanced(expression: str) -> bool:
    depth = 0
    quoted = False
    for ch in expression:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "([":
            depth += 1
        elif not quoted and ch in ")]":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and not quoted


def definition(resource: dict[str, Any], version: int = 1) -> CustomParam | None:
    """The custom parameter a SearchParameter resource defines; None when it is retired
    or is an R4 definition (same code and url) that the server has built in.

    Raises FHIRError 400 naming the element (SearchParameter.code, .base[n], .type,
    .expression) when it cannot be indexed: a missing or malformed element, a base that
    is not an R4 resource type, a type the index does not hold, or a code that one of
    its bases already has.
    """
    if resource.get("status") == "retired":
        return None
    code = resource.get("code")
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise _invalid(
            "SearchParameter.code",
            "A custom SearchParameter needs a code of letters, digits and '-', "
            "starting with a letter",
        )
    bases = resource.get("base")
    if not isinstance(bases, list) or not bases:
        raise _invalid("SearchParameter.base", "A SearchParameter needs at least one base type")
    url = resource.get("url")
    for n, base in enumerate(bases):
        if base not in RESOURCE_TYPES:
            raise _invalid(f"SearchParameter.base[{n}]", "A base must be an R4 resource type")
        builtin = search_parameters(base).get(code)
        if builtin is not None and builtin.url == url:
            return None  # an R4 definition loaded as a resource: built in already
        if builtin is not None:
            raise _invalid(
                "SearchParameter.code", f"{base} already has a search parameter '{code}'"
            )
    param_type = resource.get("type")
    if param_type not in _converters():
        supported = ", ".join(sorted(_converters()))
        raise _invalid(
            "SearchParameter.type", f"Custom search parameters can be of type {supported}"
        )
    expression = resource.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise _invalid(
            "SearchParameter.expression", "A custom SearchParameter needs a FHIRPath expression"
        )
    if not _balanced(expression):
        raise _invalid("SearchParameter.expression", "The expression is not valid FHIRPath")
    for base in bases:
        try:
            compile_path(expression, base)
        except Exception:  # noqa: BLE001 - any parser failure is the client's expression
            raise _invalid(
                "SearchParameter.expression", "The expression is not valid FHIRPath"
            ) from None
    description = resource.get("description")
    targets = resource.get("target")
    known_targets = tuple(t for t in targets if t in RESOURCE_TYPES) if isinstance(
        targets, list) else ()
    if param_type == "reference" and not known_targets:  # no target: any resource type
        known_targets = tuple(sorted(RESOURCE_TYPES))
    return CustomParam(
        resource_id=str(resource.get("id", "")),
        version=version,
        code=code,
        bases=tuple(bases),
        type=param_type,
        expression=expression,
        url=url if isinstance(url, str) else "",
        description=description if isinstance(description, str) else "",
        targets=known_targets if param_type == "reference" else (),
    )


Step = tuple[str, Callable[[dict[str, Any]], list[Any]], Callable[["IndexRows", str, Any], None]]


class Registry:
    """The custom parameters this process knows, and which of them are indexed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._params: dict[str, CustomParam] = {}  # by SearchParameter id
        self._indexed: set[tuple[str, int]] = set()  # (SearchParameter id, version)
        self._plans: dict[str, tuple[Step, ...]] = {}
        self._refresher: Callable[[], None] | None = None

    def set_refresher(
        self, refresher: Callable[[], None] | None, only: Callable[[], None] | None = None
    ) -> None:
        """The store's check that reloads the registry when another process changed the
        stored SearchParameters (called before searches look parameters up); None to
        clear, and with `only`, clear only when that one is still set (a store closing)."""
        with self._lock:
            if only is None or self._refresher == only:
                self._refresher = refresher

    def refresh(self) -> None:
        refresher = self._refresher
        if refresher is not None:
            refresher()

    def replace_all(self, params: Iterable[tuple[CustomParam, bool]]) -> None:
        with self._lock:
            self._params = {}
            self._indexed = set()
            for param, indexed in params:
                self._params[param.resource_id] = param
                if indexed:
                    self._indexed.add((param.resource_id, param.version))
            self._plans = {}

    def define(self, param: CustomParam) -> None:
        """Register (or replace) a parameter as pending. Raises a 400 when another
        SearchParameter already defines its code on one of its bases."""
        with self._lock:
            for other in self._params.values():
                if (
                    other.resource_id != param.resource_id
                    and other.code == param.code
                    and set(other.bases) & set(param.bases)
                ):
                    raise _invalid(
                        "SearchParameter.code",
                        f"SearchParameter/{other.resource_id} already defines '{param.code}'",
                    )
            self._params[param.resource_id] = param
            self._plans = {}

    def forget(self, resource_id: str) -> None:
        with self._lock:
            self._params.pop(resource_id, None)
            self._plans = {}

    def mark_indexed(self, versions: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            self._indexed.update(versions)

    def is_indexed(self, param: CustomParam) -> bool:
        return (param.resource_id, param.version) in self._indexed

    def of_type(self, resource_type: str) -> dict[str, CustomParam]:
        return {p.code: p for p in self._params.values() if resource_type in p.bases}

    def pending(self, types: Sequence[str] | None = None) -> list[CustomParam]:
        """Pending parameters all of whose bases are among `types` (None: any)."""
        return [
            p
            for p in self._params.values()
            if not self.is_indexed(p) and (types is None or set(p.bases) <= set(types))
        ]

    def plan(self, resource_type: str) -> tuple[Step, ...]:
        plan = self._plans.get(resource_type)
        if plan is None:
            converters = _converters()
            steps: list[Step] = []
            for param in self.of_type(resource_type).values():
                getter = compile_path(param.expression, resource_type)[0]
                steps.append((f"{resource_type}.{param.code}", getter, converters[param.type]))
            plan = self._plans[resource_type] = tuple(steps)
        return plan


REGISTRY = Registry()


def add_rows(rows: IndexRows, resource: dict[str, Any]) -> None:
    """Add the index rows of the custom parameters of the resource's type (pending ones
    too, so writes after the definition are indexed before any $reindex)."""
    resource_type = resource.get("resourceType")
    if not REGISTRY._params or not isinstance(resource_type, str):
        return
    for key, getter, convert in REGISTRY.plan(resource_type):
        for value in getter(resource):
            convert(rows, key, value)


def parameters(
    resource_type: str | None,
    known: Mapping[str, SearchParamDef],
    params: Sequence[tuple[str, str]],
) -> Mapping[str, SearchParamDef]:
    """`known` with the indexed custom parameters of `resource_type` added. Raises a 400
    when `params` uses one that is still pending."""
    if resource_type is not None:
        REGISTRY.refresh()  # another process may have defined or indexed one
    if resource_type is None or not REGISTRY._params:
        return known
    custom = REGISTRY.of_type(resource_type)
    if not custom:
        return known
    used = {name.partition(":")[0].partition(".")[0] for name, _ in params}
    for code in used & custom.keys():
        if not REGISTRY.is_indexed(custom[code]):
            raise FHIRError(
                400,
                [Issue("not-supported",
                       f"Search parameter '{code}' is not yet indexed; run $reindex",
                       expression=(code,))],
            )  # fmt: skip
    merged = dict(known)
    merged.update({code: p.as_definition() for code, p in custom.items()})
    return MappingProxyType(merged)


def lookup(resource_type: str, code: str) -> SearchParamDef | None:
    """The R4 or indexed custom parameter `code` of `resource_type` (chains, `_has`,
    `_include`), None if there is none; a 400 when it is a custom one still pending."""
    builtin = search_parameters(resource_type).get(code)
    if builtin is not None:
        return builtin
    return parameters(resource_type, {}, [(code, "")]).get(code)


def with_custom(resource_type: str) -> Mapping[str, SearchParamDef]:
    """The R4 parameters of `resource_type` and its indexed custom ones."""
    known = search_parameters(resource_type)
    REGISTRY.refresh()
    indexed = {code: p.as_definition() for code, p in REGISTRY.of_type(resource_type).items()
               if REGISTRY.is_indexed(p)} if REGISTRY._params else {}
    return MappingProxyType({**known, **indexed}) if indexed else known
