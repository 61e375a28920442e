"""The server's CapabilityStatement (R4 capabilitystatement.html), built from what
the code really does: the interactions come from the REST route table, the search
parameters from what the search layer indexes. Nothing here is listed by hand."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from conformance.definitions import (
    COMMON_PARAMETERS,
    COMPARTMENT_TYPES,
    RESOURCE_TYPES,
    compartment_url,
    search_parameters,
)
from search.composites import components
from search.extract import COLUMN_PARAMETERS
from search.query import SUPPORTED_TYPES
from fhir_server import FHIR_VERSION, __version__

# R4 valueset-type-restful-interaction / system-restful-interaction, in the spec's order
_TYPE_ORDER = ("read", "vread", "update", "patch", "delete", "history-instance",
               "history-type", "create", "search-type")
_SYSTEM_ORDER = ("transaction", "batch", "search-system", "history-system")


@dataclass(frozen=True)
class RestSupport:
    """What the REST layer implements, as the route table declares it."""

    type_interactions: frozenset[str]
    system_interactions: frozenset[str]
    conditional_create: bool
    conditional_update: bool
    conditional_delete: bool  # "single": several matches are refused with 412


@cache
def search_params(resource_type: str) -> tuple[dict[str, str], ...]:
    """CapabilityStatement.rest.resource.searchParam: the parameters of the type whose
    kind the search layer supports, common ones (_id, _lastUpdated, ...) first."""
    out: list[dict[str, str]] = []
    for code, definition in sorted(
        search_parameters(resource_type).items(),
        key=lambda item: (item[0] not in COMMON_PARAMETERS, item[0]),
    ):
        supported = definition.type in SUPPORTED_TYPES and (
            definition.type != "composite" or components(resource_type, code) is not None
        )
        if supported or code in COLUMN_PARAMETERS:
            out.append({"name": code, "definition": definition.url, "type": definition.type})
    # full text (search.fulltext); R4 defines both as string parameters, _text on
    # DomainResource only
    out.append({"name": "_content", "type": "string",
                "definition": "http://hl7.org/fhir/SearchParameter/Resource-content"})
    if resource_type not in ("Bundle", "Binary", "Parameters"):
        out.append({"name": "_text", "type": "string",
                    "definition": "http://hl7.org/fhir/SearchParameter/DomainResource-text"})
    return tuple(out)


def custom_search_params(resource_type: str, base_url: str) -> list[dict[str, str]]:
    """The custom SearchParameters (search.custom) of the type that a $reindex has made
    searchable; pending ones are not listed, since searching them is refused."""
    from search.custom import REGISTRY

    out = []
    for code, param in sorted(REGISTRY.of_type(resource_type).items()):
        if REGISTRY.is_indexed(param):
            definition = param.url or f"{base_url}/SearchParameter/{param.resource_id}"
            out.append({"name": code, "definition": definition, "type": param.type})
    return out


def custom_signature() -> tuple[tuple[str, str, bool], ...]:
    """What custom_search_params depends on, to know when a cached statement is stale."""
    from search.custom import REGISTRY

    return tuple(sorted(
        (resource_type, f"{p.resource_id}/{p.version}", REGISTRY.is_indexed(p))
        for resource_type in RESOURCE_TYPES for p in REGISTRY.of_type(resource_type).values()
    ))


def _ordered(codes: Iterable[str], order: tuple[str, ...]) -> list[dict[str, str]]:
    present = set(codes)
    return [{"code": code} for code in order if code in present]


def capability_statement(base_url: str, support: RestSupport) -> dict[str, Any]:
    from search.result import include_values, revinclude_values
    from fhir_server.operations import UNSERVED_TYPES
    from terminology.operation_definitions import type_operations

    interactions = _ordered(support.type_interactions, _TYPE_ORDER)
    read_only = [i for i in interactions if i["code"] not in ("create", "update", "patch")]
    resources = []
    for resource_type in sorted(RESOURCE_TYPES):
        entry: dict[str, Any] = {
            "type": resource_type,
            # types whose writes are refused (a Subscription nobody would serve)
            "interaction": read_only if resource_type in UNSERVED_TYPES else interactions,
            "versioning": "versioned-update",
            "readHistory": "vread" in support.type_interactions,
            "updateCreate": "update" in support.type_interactions,
            "conditionalCreate": support.conditional_create,
            "conditionalRead": "not-supported",
            "conditionalUpdate": support.conditional_update,
            "conditionalDelete": "single" if support.conditional_delete else "not-supported",
        }
        params = search_params(resource_type)
        if params and "search-type" in support.type_interactions:
            entry["searchParam"] = [*params, *custom_search_params(resource_type, base_url)]
            # FHIR JSON has no empty arrays (ele-1): a type nothing points at has none
            if includes := list(include_values(resource_type)):
                entry["searchInclude"] = includes
            if revincludes := list(revinclude_values(resource_type)):
                entry["searchRevInclude"] = revincludes
        # the terminology operations of CodeSystem, ValueSet and ConceptMap, per type
        if type_ops := type_operations(resource_type, support.type_interactions, base_url):
            entry["operation"] = type_ops
        resources.append(entry)
    # Route codes starting with "$" are operations (fhir_server.rest.routes), each with
    # an OperationDefinition the server serves at OperationDefinition/<name>.
    operations = sorted(
        code[1:]
        for code in support.system_interactions | support.type_interactions
        if code.startswith("$")
    )
    rest_operations = [
        {"name": name, "definition": f"{base_url}/OperationDefinition/{name}"}
        for name in operations
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).date().isoformat(),
        "kind": "instance",
        "software": {"name": "fhir-fusion", "version": __version__},
        "implementation": {"description": "fhir-fusion FHIR R4 server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                # compartment search: GET [compartment type]/[id]/[type] (search.chain)
                "compartment": [compartment_url(code) for code in COMPARTMENT_TYPES],
                "resource": resources,
                "interaction": _ordered(support.system_interactions, _SYSTEM_ORDER),
                **({"operation": rest_operations} if rest_operations else {}),
            }
        ],
    }
