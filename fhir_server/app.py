"""The ASGI application: the FHIR REST API on a ResourceStore.

Every response is JSON; every error is an OperationOutcome, including the router's
own 404/405 and anything unexpected (a 500 that carries no traceback).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from conformance.capability import RestSupport, capability_statement
from fhir_server.errors import FHIRError
from fhir_server.rest import http
from fhir_server.rest.handlers import Handlers
from fhir_server.rest.routes import build_routes, interactions, internal_error
from fhir_server.storage.base import Context, ResourceStore

if TYPE_CHECKING:
    from adapters.pipeline import Pipeline

logger = logging.getLogger(__name__)

# Routes outside the FHIR base (e.g. DICOMweb): "module:function" of functions taking
# the core Handlers and returning Starlette routes. Imported when an app is created.
OTHER_ROUTES: tuple[str, ...] = ("fhir_server.feeds_http:routes", "fhir_server.dicomweb:routes")


def _other_routes(handlers: Handlers) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for name in OTHER_ROUTES:
        module, _, function = name.partition(":")
        routes.extend(getattr(importlib.import_module(module), function)(handlers))
    return routes


def rest_support() -> RestSupport:
    """What the route table implements, for the CapabilityStatement."""
    by_level: dict[str, set[str]] = {"instance": set(), "type": set(), "system": set()}
    conditional: set[str] = set()
    for item in interactions():
        by_level[item.level].update(item.codes)
        if item.conditional:
            conditional.update(item.codes)
    return RestSupport(
        type_interactions=frozenset(by_level["instance"] | by_level["type"]),
        system_interactions=frozenset(by_level["system"]),
        conditional_create="create" in conditional,
        conditional_update="update" in conditional,
        conditional_delete="delete" in conditional,
    )


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FHIRError)
    return http.outcome_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        error = FHIRError.simple(404, "not-found", "There is no FHIR endpoint at this path")
    elif exc.status_code == 405:
        error = FHIRError.simple(
            405, "not-supported", f"{request.method} is not supported on this path"
        )
    else:
        error = FHIRError.simple(exc.status_code, "processing", "The request was not processed")
    return http.outcome_response(error, headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    return http.outcome_response(FHIRError.simple(400, "invalid", "The request is not valid"))


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("Unhandled %s outside the FHIR handlers", type(exc).__name__)
    return internal_error()


def create_app(
    store: ResourceStore | None = None,
    *,
    base_path: str = "/fhir",
    ctx: Context | None = None,
    store_factory: Callable[[], Awaitable[ResourceStore]] | None = None,
    base_url: str | None = None,
    pipeline: Pipeline | None = None,
) -> FastAPI:
    """The FHIR server on `store`. Give either an open store (the caller closes it) or
    a `store_factory` that the app awaits at startup and closes at shutdown (handy for
    `uvicorn --factory`). `pipeline`: the write path the feed endpoints share with the
    caller's listeners (default: one of the app's own, with the default input cap)."""
    if (store is None) == (store_factory is None):
        raise ValueError("create_app needs exactly one of store and store_factory")
    base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
    handlers = Handlers(store, base_path, ctx)  # type: ignore[arg-type]
    if pipeline is not None:
        handlers.pipeline = pipeline
    support = rest_support()
    handlers.capability_builder = lambda base_url: capability_statement(base_url, support)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from fhir_server import reindex
        from fhir_server.storage import registry_sync

        if store_factory is not None:
            handlers.store = await store_factory()
        # $reindex jobs a stopped or killed server left unfinished go on by themselves
        await reindex.resume_unfinished(handlers.store, handlers.ctx)
        # custom SearchParameters other API workers write (MongoDB; SQLite checks itself)
        fresh = asyncio.create_task(registry_sync.keep_fresh(handlers.store))
        try:
            yield
        finally:
            fresh.cancel()
            await reindex.stop_running(handlers.store)  # after their current batch
            if store_factory is not None:
                await handlers.store.close()

    app = FastAPI(
        title="fhir-fusion", openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan
    )
    app.router.routes.extend(build_routes(handlers, base_path))
    app.router.routes.extend(_other_routes(handlers))
    app.add_exception_handler(FHIRError, _fhir_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.state.handlers = handlers
    # the configured public base (config.base_url): links are built on it, not on Host
    app.state.public_base = http.public_base(base_url, base_path)
    return app
