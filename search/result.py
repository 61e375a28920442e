"""Result parameters that shape a searchset rather than filter it (R4 search.html#return):
`_include`, `_revinclude` (with `:iterate` and `*`), `_summary`, `_elements`,
`_contained` and `_containedType`.

`_contained` (search.html#contained): `false` (default) searches top-level resources
only, `true` only the resources contained in others, `both` either. With
`_containedType=container` (default) a match inside a resource returns that container
(once, however many of its contained resources match); with `contained` it returns the
contained resource itself.

`_include=Observation:subject[:Patient]` adds the resources that the matches reference
through Observation.subject; `_revinclude=Observation:subject` adds the Observations
that reference the matches. `*` stands for every reference parameter of the source
type. With `:iterate` the include is applied again to what the previous round added,
for at most MAX_ROUNDS rounds (search.html#revinclude); a resource already in the
result is never added twice, so cycles end.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from conformance.definitions import RESOURCE_TYPES, search_parameters
from search import custom
from fhir_server.errors import FHIRError, Issue

RESULT_PARAMETERS = frozenset(
    {"_include", "_revinclude", "_summary", "_elements", "_contained", "_containedType"}
)
SUMMARY_MODES = ("true", "text", "data", "count", "false")
CONTAINED_MODES = ("false", "true", "both")
CONTAINED_TYPES = ("container", "contained")
MAX_ROUNDS = 4  # rounds of :iterate after the first


@dataclass(frozen=True)
class Include:
    """One _include or _revinclude value.

    `source_type` is the type whose reference parameter is followed ("*" for a bare
    `_include=*`: every type in the result); `codes` the reference parameters (all of
    them for `Type:*`); `target_type` restricts the referenced type (None: any target)."""

    raw: str
    source_type: str
    codes: tuple[str, ...]
    target_type: str | None
    reverse: bool
    iterate: bool

    @property
    def name(self) -> str:
        base = "_revinclude" if self.reverse else "_include"
        return base + (":iterate" if self.iterate else "")


@dataclass(frozen=True)
class ResultParams:
    includes: tuple[Include, ...] = ()
    summary: str | None = None  # true | text | data | count | false
    elements: tuple[str, ...] = ()
    contained: str = "false"  # false | true | both
    contained_type: str = "container"  # container | contained

    def to_params(self) -> list[tuple[str, str]]:
        params = [(include.name, include.raw) for include in self.includes]
        if self.summary is not None:
            params.append(("_summary", self.summary))
        if self.elements:
            params.append(("_elements", ",".join(self.elements)))
        if self.contained != "false":
            params.append(("_contained", self.contained))
            if self.contained_type != "container":
                params.append(("_containedType", self.contained_type))
        return params


def _error(name: str, diagnostics: str, code: str = "invalid") -> FHIRError:
    return FHIRError(400, [Issue(code, diagnostics, expression=(name,))])


def parse_include(name: str, value: str) -> Include:
    base, _, modifier = name.partition(":")
    if modifier not in ("", "iterate", "recurse"):  # recurse: the STU3 spelling of iterate
        raise _error(name, f"'{base}' takes only the modifier ':iterate'")
    reverse = base == "_revinclude"
    iterate = modifier != ""
    if value == "*":
        if reverse:
            raise _error(name, "'_revinclude=*' needs a source type, e.g. Observation:*")
        # every reference of every resource in the result (sqlite_graph expands it per type)
        return Include(value, "*", (), None, reverse, iterate)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise _error(name, f"'{base}' takes [type]:[parameter] or [type]:[parameter]:[target]")
    source_type, code = parts[0], parts[1]
    target_type = parts[2] if len(parts) == 3 else None
    if source_type not in RESOURCE_TYPES:
        raise _error(name, f"'{base}' names an unknown resource type")
    params = custom.with_custom(source_type)
    if code == "*":
        codes = tuple(c for c, p in params.items() if p.type == "reference")
        targets = {t for c in codes for t in params[c].targets}
    else:
        param = custom.lookup(source_type, code)  # a 400 for a custom one not yet indexed
        if param is None:
            raise _error(name, f"'{base}': {source_type} has no search parameter '{code}'")
        if param.type != "reference":
            raise _error(name, f"'{base}': {source_type}:{code} is a {param.type}, not a reference")
        codes = (code,)
        targets = set(param.targets)
    if target_type is not None and target_type not in targets:
        raise _error(name, f"'{base}': {target_type} is not a target of {source_type}:{code}")
    return Include(value, source_type, codes, target_type, reverse, iterate)


def _elements(value: str) -> tuple[str, ...]:
    names: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        # Only top-level element names (R4 allows no paths in _elements).
        if not item.replace("[x]", "").isidentifier():
            raise _error("_elements", "'_elements' takes element names such as name,birthDate")
        if item not in names:
            names.append(item)
    return tuple(names)


def parse_result_params(params: list[tuple[str, str]]) -> ResultParams:
    """The result parameters among (name, value) pairs whose base name is one of
    RESULT_PARAMETERS; raises FHIRError 400 naming the parameter for bad values."""
    includes: list[Include] = []
    summary: str | None = None
    elements: tuple[str, ...] = ()
    contained = "false"
    contained_type = "container"
    seen: set[str] = set()
    for name, value in params:
        base = name.partition(":")[0]
        if base in ("_include", "_revinclude"):
            if value:
                include = parse_include(name, value)
                if include not in includes:
                    includes.append(include)
            continue
        if ":" in name:
            raise _error(name, f"'{base}' takes no modifier")
        if base in seen:
            raise _error(name, f"'{name}' is given more than once")
        seen.add(base)
        if base == "_summary":
            if value not in SUMMARY_MODES:
                raise _error(name, "'_summary' takes true, text, data, count or false")
            summary = value
        elif base == "_elements":
            elements = _elements(value)
        elif base == "_contained":
            if value not in CONTAINED_MODES:
                raise _error(name, "'_contained' takes false, true or both")
            contained = value
        elif base == "_containedType":
            if value not in CONTAINED_TYPES:
                raise _error(name, "'_containedType' takes container or contained")
            contained_type = value
    return ResultParams(tuple(includes), summary, elements, contained, contained_type)


@cache
def include_values(resource_type: str) -> tuple[str, ...]:
    """CapabilityStatement searchInclude: the _include values a search on
    `resource_type` takes ("*", "Type:*" and each reference parameter)."""
    params = search_parameters(resource_type)
    codes = sorted(code for code, p in params.items() if p.type == "reference")
    return ("*", f"{resource_type}:*", *(f"{resource_type}:{code}" for code in codes))


@cache
def _revinclude_index() -> dict[str, tuple[str, ...]]:
    index: dict[str, list[str]] = {}
    for source_type in sorted(RESOURCE_TYPES):
        for code, param in sorted(search_parameters(source_type).items()):
            if param.type == "reference":
                for target in param.targets:
                    index.setdefault(target, []).append(f"{source_type}:{code}")
    return {target: tuple(values) for target, values in index.items()}


def revinclude_values(resource_type: str) -> tuple[str, ...]:
    """CapabilityStatement searchRevInclude: the reference parameters of any type that
    can point at `resource_type`, as _revinclude values."""
    return _revinclude_index().get(resource_type, ())
