"""The route table: each URL pattern and method, the handler that serves it and the
FHIR interaction it implements. The CapabilityStatement is derived from this table,
so it lists exactly what the server routes."""

from __future__ import annotations

import importlib
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_server.errors import FHIRError
from fhir_server.rest import http
from fhir_server.rest.handlers import Handlers

logger = logging.getLogger(__name__)

Level = Literal["instance", "type", "system"]


@dataclass(frozen=True)
class Interaction:
    method: str
    path: str  # below the base path
    handler: str  # attribute of Handlers
    codes: tuple[str, ...]  # R4 restful-interaction codes; () for non-interactions
    level: Level
    conditional: bool = False


# Order matters: literal segments (metadata, _history, _search) before {type}/{id}.
CORE_INTERACTIONS: tuple[Interaction, ...] = (
    Interaction("GET", "/metadata", "metadata", (), "system"),
    Interaction("GET", "/_history", "history_system", ("history-system",), "system"),
    Interaction("POST", "", "bundle", ("transaction", "batch"), "system"),
    Interaction("GET", "", "search_system", ("search-system",), "system"),
    Interaction("POST", "/_search", "search_system_post", ("search-system",), "system"),
    Interaction("GET", "/{type}/_history", "history_type", ("history-type",), "type"),
    Interaction("POST", "/{type}/_search", "search_type_post", ("search-type",), "type"),
    Interaction("GET", "/{type}/_search", "search_type", ("search-type",), "type"),
    Interaction("GET", "/{type}/{id}/_history/{vid}", "vread", ("vread",), "instance"),
    Interaction("GET", "/{type}/{id}/_history", "history_instance", ("history-instance",),
                "instance"),
    Interaction("GET", "/{type}", "search_type", ("search-type",), "type"),
    Interaction("POST", "/{type}", "create", ("create",), "type", conditional=True),
    Interaction("PUT", "/{type}", "conditional_update", ("update",), "type", conditional=True),
    Interaction("DELETE", "/{type}", "conditional_delete", ("delete",), "type",
                conditional=True),
    Interaction("GET", "/{type}/{id}", "read", ("read",), "instance"),
    # compartment search (search.chain.compartment_search): a search, not an interaction
    Interaction("GET", "/{type}/{id}/{compartment}", "search_compartment", (), "instance"),
    Interaction("POST", "/{type}/{id}/{compartment}/_search", "search_compartment_post", (),
                "instance"),
    Interaction("PUT", "/{type}/{id}", "update", ("update",), "instance"),
    Interaction("PATCH", "/{type}/{id}", "patch", ("patch",), "instance"),
    Interaction("DELETE", "/{type}/{id}", "delete", ("delete",), "instance"),
)


@dataclass(frozen=True)
class EndpointGroup:
    """Operations served by one module: their interactions, and a factory that makes,
    from the core handlers (store, context, base path), the object whose methods of
    the names in `Interaction.handler` serve them. Codes starting with "$" become
    CapabilityStatement.rest.operation."""

    interactions: tuple[Interaction, ...]
    factory: Callable[[Handlers], object]


# "module:attribute" of each EndpointGroup, imported when the routes are built (an
# operation module may import the app's modules, not the other way round). Their
# routes come before the core table, so literal paths ($op, OperationDefinition/x)
# win over {type}/{id}.
ENDPOINT_GROUPS: tuple[str, ...] = (
    "fhir_server.reindex:ENDPOINTS",
    "fhir_server.ingest_endpoints:ENDPOINTS",
    "fhir_server.terminology_endpoints:ENDPOINTS",
)


def endpoint_groups() -> list[EndpointGroup]:
    groups = []
    for name in ENDPOINT_GROUPS:
        module, _, attribute = name.partition(":")
        groups.append(getattr(importlib.import_module(module), attribute))
    return groups


def interactions() -> tuple[Interaction, ...]:
    """Every routed interaction, operations first."""
    ops = tuple(item for group in endpoint_groups() for item in group.interactions)
    return ops + CORE_INTERACTIONS


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame: enough to find a bug, with no data in it."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


def internal_error() -> Response:
    return http.outcome_response(
        FHIRError.simple(500, "exception", "Internal server error; the request was not completed")
    )


def _endpoint(
    handler: Callable[[Request], Awaitable[Response]], label: str
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        content_type = http.FHIR_JSON
        try:
            content_type = http.check_format(request)
            return http.answer_as(await handler(request), content_type)
        except FHIRError as exc:
            return http.answer_as(http.outcome_response(exc), content_type)
        except Exception as exc:
            # The message may quote request content, so only the type and place are logged.
            logger.error("Unhandled %s at %s serving %s", type(exc).__name__, _where(exc), label)
            return internal_error()

    return endpoint


def build_routes(handlers: Handlers, base_path: str) -> list[Route]:
    """One route per path, dispatching on the method, so that a 405 lists every
    method the path allows (Allow header)."""
    served: list[tuple[Interaction, object]] = []
    for group in endpoint_groups():
        owner = group.factory(handlers)
        served.extend((item, owner) for item in group.interactions)
    served.extend((item, handlers) for item in CORE_INTERACTIONS)
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for item, owner in served:
        label = f"{item.method} {item.path or '/'}"
        methods = by_path.setdefault(item.path, {})
        if item.method in methods:
            raise ValueError(f"Two handlers for {label}")
        methods[item.method] = _endpoint(getattr(owner, item.handler), label)
    return [
        Route(base_path + path, _dispatch(methods), methods=list(methods),
              include_in_schema=False)
        for path, methods in by_path.items()
    ]


def _dispatch(
    methods: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await methods[method](request)

    return endpoint
