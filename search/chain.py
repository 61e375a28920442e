"""Search parameters that reach other resources: chains, reverse chains (`_has`),
compartments and parameters shared by several `_type`s (R4 search.html#chaining,
search.html#has, compartmentdefinition.html#search, search.html#all).

Each is parsed into a *link clause*. A link clause holds, per resource type on the
other side, a whole `SearchQuery` on that type (parsed by `search.query.parse_search`
itself, so every parameter type, modifier and further chain works there too); the
store turns it into a nested subquery per hop (fhir_server/storage/sqlite_graph.py).

- `subject:Patient.name=peter` on Observation -> ChainClause: rids whose
  Observation.subject reference points at a Patient matching `name=peter`. Without the
  `:Patient` the chain searches every target type of `subject` that has `name`.
- `_has:Observation:patient:code=1234-5` on Patient -> HasClause: Patients referenced
  through Observation.patient by an Observation matching `code=1234-5`.
- `Patient/123/Observation` -> CompartmentClause: Observations that reference
  Patient/123 through any parameter the Patient CompartmentDefinition lists.
- `name=x` with `_type=Patient,Practitioner` -> TypedClause: the union of the search on
  each type.

Error messages name the parameter, never its value (search values are patient data).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from conformance.definitions import (
    COMPARTMENT_TYPES,
    OWN_RESOURCE,
    RESOURCE_TYPES,
    compartment,
    search_parameters,
)
from fhir_server.errors import FHIRError, Issue
from search import custom
from search.extract import index_key

if TYPE_CHECKING:
    from search.query import SearchQuery

MAX_HOPS = 4  # chain links plus _has levels in one parameter name
_NESTED = re.compile(r"^In '[^']*': ")


@dataclass(frozen=True)
class ChainClause:
    """[reference param](:[Type]).[rest]=value on the searched type."""

    name: str  # the parameter name as received, e.g. "subject:Patient.name"
    value: str  # the value as received
    key: str  # index key of the reference parameter on the searched type
    targets: tuple[tuple[str, SearchQuery], ...]  # (target type, search on that type)


@dataclass(frozen=True)
class HasClause:
    """_has:[Type]:[reference param]:[rest]=value: resources of the searched type that a
    [Type] matching [rest]=value references through [reference param]."""

    name: str
    value: str
    target_type: str  # the searched type
    key: str  # index key of the reference parameter on the referring type
    referrers: SearchQuery  # the search on the referring type


@dataclass(frozen=True)
class CompartmentClause:
    """The resource references [compartment type]/[id] through one of `keys`."""

    compartment_type: str
    compartment_id: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class TypedClause:
    """One parameter of a search across several types: the union of its search on each."""

    name: str
    value: str
    alternatives: tuple[tuple[str, SearchQuery], ...]


LinkClause = ChainClause | HasClause | CompartmentClause | TypedClause

Parser = Callable[..., "SearchQuery"]


def _error(name: str, diagnostics: str, code: str = "invalid") -> FHIRError:
    return FHIRError(400, [Issue(code, diagnostics, expression=(name,))])


def hops(name: str) -> int:
    """How many links a parameter name crosses: one per '.' and per '_has:'."""
    return name.count(".") + name.count("_has:")


def _inner(
    parse: Parser,
    outer_name: str,
    resource_type: str,
    name: str,
    value: str,
    base_url: str | None,
) -> SearchQuery:
    """Parse the rest of a chain on `resource_type`; its errors name the whole parameter."""
    try:
        return parse(resource_type, [(name, value)], strict=True, base_url=base_url)
    except FHIRError as exc:
        issues = [
            replace(
                issue,
                # a deeper link already said where: keep only the outermost name
                diagnostics=f"In '{outer_name}': {_NESTED.sub('', issue.diagnostics)}",
                expression=(outer_name,),
            )
            for issue in exc.issues
        ]
        raise FHIRError(exc.status, issues) from None


def _check_depth(name: str) -> None:
    if hops(name) > MAX_HOPS:
        raise _error(
            name, f"Search parameter '{name}' chains more than {MAX_HOPS} links", "too-costly"
        )


def parse_chain(
    parse: Parser, resource_type: str, name: str, value: str, base_url: str | None
) -> ChainClause:
    """`subject:Patient.name`, `encounter.service-provider.name`, ... on resource_type."""
    _check_depth(name)
    head, _, rest = name.partition(".")
    code, _, type_modifier = head.partition(":")
    param = custom.lookup(resource_type, code)
    if param is None:
        raise _error(name, f"Unknown search parameter '{code}' in chain '{name}'")
    if param.type != "reference":
        raise _error(
            name, f"Search parameter '{code}' is of type {param.type}, so '{name}' cannot chain"
        )
    if not rest:
        raise _error(name, f"Chained parameter '{name}' ends without a parameter")
    if type_modifier:
        if type_modifier not in RESOURCE_TYPES or type_modifier not in param.targets:
            raise _error(name, f"'{type_modifier}' is not a target type of '{code}' in '{name}'")
        candidates: tuple[str, ...] = (type_modifier,)
    else:
        candidates = param.targets
    rest_code = rest.partition(":")[0].partition(".")[0]
    targets: list[tuple[str, SearchQuery]] = []
    failed: FHIRError | None = None
    for target in candidates:
        if rest_code != "_has" and rest_code not in custom.with_custom(target):
            continue
        try:
            targets.append((target, _inner(parse, name, target, rest, value, base_url)))
        except FHIRError as exc:
            # an ambiguous chain searches the targets where the rest makes sense
            if len(candidates) == 1:
                raise
            failed = failed or exc
    if not targets:
        if failed is not None:
            raise failed
        raise _error(
            name, f"No target type of '{code}' has a search parameter '{rest_code}' ('{name}')"
        )
    return ChainClause(name, value, index_key(resource_type, code), tuple(targets))


def parse_has(
    parse: Parser, resource_type: str | None, name: str, value: str, base_url: str | None
) -> HasClause:
    """`_has:Observation:patient:code` (and nested `_has:...:_has:...`) on resource_type."""
    _check_depth(name)
    parts = name.split(":", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise _error(name, "'_has' takes the form _has:[type]:[reference parameter]:[parameter]")
    _, source_type, code, rest = parts
    if resource_type is None:
        raise _error(name, "'_has' needs a resource type to search on")
    if source_type not in RESOURCE_TYPES:
        raise _error(name, f"'_has' names an unknown resource type ('{name}')")
    param = custom.lookup(source_type, code)
    if param is None:
        raise _error(name, f"'{code}' is not a search parameter of {source_type} ('{name}')")
    if param.type != "reference":
        raise _error(name, f"'_has' needs a reference parameter; '{code}' is a {param.type}")
    if param.targets and resource_type not in param.targets:
        raise _error(name, f"{source_type}.{code} cannot refer to a {resource_type} ('{name}')")
    referrers = _inner(parse, name, source_type, rest, value, base_url)
    return HasClause(name, value, resource_type, index_key(source_type, code), referrers)


def parse_link(
    parse: Parser, resource_type: str | None, name: str, value: str, base_url: str | None
) -> LinkClause:
    if name == "_has" or name.startswith("_has:"):
        return parse_has(parse, resource_type, name, value, base_url)
    if resource_type is None:
        raise _error(name, f"Chained parameter '{name}' needs a resource type to search on")
    return parse_chain(parse, resource_type, name, value, base_url)


def compartment_clause(
    compartment_type: str, compartment_id: str, resource_type: str
) -> CompartmentClause | TypedClause:
    """Membership of resource_type in the [compartment_type]/[id] compartment, by the
    R4 CompartmentDefinition of that type (conformance.definitions.compartment). The
    compartment's own resource ("{def}": Encounter/[id]/Encounter) is itself a member."""
    from search.query import parse_search

    members = compartment_members(compartment_type)
    codes = members.get(resource_type)
    if not codes:
        raise FHIRError.simple(
            400,
            "invalid",
            f"{resource_type} is not in the {compartment_type} compartment",
            "compartment",
        )
    if codes == (OWN_RESOURCE,):
        # the only R4 "{def}" members are the compartment types themselves, with no
        # other parameter: membership is the resource's own id
        own = parse_search(resource_type, [("_id", compartment_id)])
        return TypedClause("", "", ((resource_type, own),))
    keys = tuple(index_key(resource_type, code) for code in codes if code != OWN_RESOURCE)
    return CompartmentClause(compartment_type, compartment_id, keys)


def compartment_members(compartment_type: str) -> Mapping[str, tuple[str, ...]]:
    """The member types of a compartment type and their linking parameters; 400 for a
    type that is not one of the R4 compartments."""
    if compartment_type not in COMPARTMENT_TYPES:
        raise FHIRError.simple(
            400,
            "not-supported",
            f"{compartment_type} is not a compartment type; the R4 compartments are "
            + ", ".join(COMPARTMENT_TYPES),
            "compartment",
        )
    return compartment(compartment_type)


def parse_types(value: str) -> tuple[str, ...]:
    """`_type=Patient,Observation`: the listed types, in order, without repeats."""
    types: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if item not in RESOURCE_TYPES:
            raise _error("_type", "'_type' lists an unknown resource type")
        if item not in types:
            types.append(item)
    if not types:
        raise _error("_type", "'_type' needs at least one resource type")
    return tuple(types)


def shared_parameter(types: tuple[str, ...], code: str) -> bool:
    """Whether every type in `types` defines the parameter `code` (search.html#all:
    a search across types may use the parameters they share)."""
    return all(code in search_parameters(t) for t in types)


def typed_clause(
    parse: Parser, types: tuple[str, ...], name: str, value: str, base_url: str | None
) -> TypedClause:
    alternatives = tuple((t, _inner(parse, name, t, name, value, base_url)) for t in types)
    return TypedClause(name, value, alternatives)


def link_params(links: tuple[LinkClause, ...]) -> list[tuple[str, str]]:
    """The link clauses as received, for the Bundle's self/next links (compartment
    membership is part of the path, not a parameter)."""
    return [
        (link.name, link.value)
        for link in links
        if not isinstance(link, CompartmentClause) and link.name
    ]


def compartment_search(
    compartment_type: str,
    compartment_id: str,
    target: str,
    params: list[tuple[str, str]],
    strict: bool = False,
    base_url: str | None = None,
) -> SearchQuery:
    """`GET [compartment type]/[id]/[target]?params`: the search on `target` limited to
    the compartment (compartmentdefinition.html#search). `target` "*" searches every
    type in the compartment, with the common parameters only."""
    from search.query import SearchQuery, parse_search

    if target != "*":
        query = parse_search(target, params, strict=strict, base_url=base_url)
        member = compartment_clause(compartment_type, compartment_id, target)
        return replace(query, links=(member, *query.links))
    members = compartment_members(compartment_type)
    query = parse_search(None, params, strict=strict, base_url=base_url)
    types = tuple(t for t in sorted(members) if not query.types or t in query.types)
    alternatives = tuple(
        (t, SearchQuery(t, links=(compartment_clause(compartment_type, compartment_id, t),)))
        for t in types
    )
    if not types:
        raise _error("_type", f"No type in '_type' is in the {compartment_type} compartment")
    return replace(query, types=types, links=(TypedClause("", "", alternatives), *query.links))
