"""The FHIR RESTful interactions (R4 http.html), one method each.

Writes go through fhir_server.operations inside a store transaction, the same code
that runs Bundle entries. Reads answer with the stored bytes as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from conformance.definitions import RESOURCE_TYPES
from fhir_server import jsonutil, operations, views
from fhir_server.bundles import process_bundle
from fhir_server.errors import FHIRError, invalid, not_found
from fhir_server.operations import OperationResult
from fhir_server.rest import http
from fhir_server.storage.base import Context, ResourceStore

if TYPE_CHECKING:
    from search.query import SearchQuery

_IGNORED_PARAMS = frozenset({"_format", "_pretty"})


def _type(request: Request) -> str:
    resource_type: str = request.path_params["type"]
    if resource_type not in RESOURCE_TYPES:
        shown = f" {resource_type}" if resource_type.isalnum() and len(resource_type) < 64 else ""
        raise FHIRError.simple(404, "not-supported", f"Unknown resource type{shown}")
    return resource_type


def _id(request: Request) -> str:
    return operations.check_id(request.path_params["id"])


def _compartment(request: Request) -> tuple[str, str, str]:
    """[compartment type], [id] and the searched type (or "*") of a compartment search."""
    target: str = request.path_params["compartment"]
    compartment = (_type(request), _id(request), target)
    if target != "*" and target not in RESOURCE_TYPES:
        raise FHIRError.simple(404, "not-supported", "Unknown resource type")
    return compartment


def _search_params(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query_params.multi_items() if k not in _IGNORED_PARAMS]


def _criteria(request: Request) -> str:
    """The query string of a conditional update/delete, without _format."""
    params = _search_params(request)
    if not params:
        raise invalid(
            "A conditional update or delete needs search parameters in the URL", "criteria"
        )
    return urlencode(params)


def _if_match(request: Request) -> int | None:
    value = request.headers.get("if-match")
    return None if value is None else operations.parse_etag(value)


class Handlers:
    """The endpoints of one server: a store, a context and the base path."""

    def __init__(self, store: ResourceStore, base_path: str, ctx: Context | None = None) -> None:
        self.store = store
        self.base_path = base_path
        self.ctx = ctx or Context()
        self._capability: dict[str, bytes] = {}
        # set by the app: the CapabilityStatement for a base URL
        self.capability_builder: Callable[[str], dict[str, Any]] | None = None

    def _base(self, request: Request) -> str:
        return http.base_url(request, self.base_path)

    def _written(self, request: Request, result: OperationResult) -> Response:
        """The answer to a create/update/delete, shaped by Prefer: return=..."""
        stored = result.stored
        preference = http.return_preference(request)
        headers: dict[str, str] = {}
        if stored is not None:
            headers = http.version_headers(stored)
            if result.status == 201:
                headers["Location"] = f"{self._base(request)}/{views.location(stored)}"
        if preference == "OperationOutcome":
            status = 200 if result.status == 204 else result.status
            outcome = jsonutil.dumps(http.information(result.note))
            return http.json_response(outcome, status, headers)
        if result.status == 204 or preference == "minimal" or stored is None or stored.deleted:
            return Response(status_code=result.status, headers=headers)
        assert stored.body is not None
        return http.json_response(stored.body, result.status, headers)

    # -- instance level --------------------------------------------------------------

    async def read(self, request: Request) -> Response:
        resource_type, resource_id = _type(request), _id(request)
        stored = operations.require_current(
            await self.store.read(self.ctx, resource_type, resource_id), resource_type, resource_id
        )
        headers = http.version_headers(stored)
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        assert stored.body is not None
        # _summary / _elements apply to a read too (views.shaped_body)
        body = views.shaped_body(stored, _search_params(request))
        return http.json_response(body, 200, headers)

    async def vread(self, request: Request) -> Response:
        resource_type, resource_id = _type(request), _id(request)
        text = request.path_params["vid"]
        if not text.isdigit() or len(text) > 18:
            raise FHIRError.simple(404, "not-found", "A version id is a whole number such as 1")
        stored = await self.store.vread(self.ctx, resource_type, resource_id, int(text))
        if stored is None:
            raise FHIRError.simple(
                404, "not-found", f"{resource_type}/{resource_id} has no version {text}"
            )
        if stored.deleted or stored.body is None:
            raise FHIRError.simple(
                410, "deleted", f"Version {text} of {resource_type}/{resource_id} is a delete"
            )
        return http.json_response(stored.body, 200, http.version_headers(stored))

    async def update(self, request: Request) -> Response:
        resource_type, resource_id = _type(request), _id(request)
        resource = await http.json_body(request)
        async with self.store.transaction(self.ctx) as txn:
            result = await operations.update(
                txn, resource, resource_type, resource_id, if_match=_if_match(request)
            )
        return self._written(request, result)

    async def patch(self, request: Request) -> Response:
        resource_type, resource_id = _type(request), _id(request)
        operations_ = await http.json_body(request, frozenset({http.JSON_PATCH}))
        async with self.store.transaction(self.ctx) as txn:
            result = await operations.patch(
                txn, resource_type, resource_id, operations_, if_match=_if_match(request)
            )
        return self._written(request, result)

    async def delete(self, request: Request) -> Response:
        resource_type, resource_id = _type(request), _id(request)
        async with self.store.transaction(self.ctx) as txn:
            result = await operations.delete(
                txn, resource_type, resource_id, if_match=_if_match(request)
            )
        return self._written(request, result)

    async def history_instance(self, request: Request) -> Response:
        resource_type, resource_id = _type(request), _id(request)
        if await self.store.read(self.ctx, resource_type, resource_id) is None:
            raise not_found(resource_type, resource_id)
        return await self._history(request, resource_type, resource_id)

    # -- type level ------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        resource_type = _type(request)
        resource = await http.json_body(request)
        async with self.store.transaction(self.ctx) as txn:
            result = await operations.create(
                txn, resource, resource_type, if_none_exist=request.headers.get("if-none-exist")
            )
        return self._written(request, result)

    async def conditional_update(self, request: Request) -> Response:
        resource_type = _type(request)
        criteria = _criteria(request)
        resource = await http.json_body(request)
        async with self.store.transaction(self.ctx) as txn:
            result = await operations.conditional_update(
                txn, resource, resource_type, criteria, if_match=_if_match(request)
            )
        return self._written(request, result)

    async def conditional_delete(self, request: Request) -> Response:
        resource_type = _type(request)
        criteria = _criteria(request)
        async with self.store.transaction(self.ctx) as txn:
            result = await operations.conditional_delete(
                txn, resource_type, criteria, if_match=_if_match(request)
            )
        return self._written(request, result)

    async def search_type(self, request: Request) -> Response:
        resource_type = _type(request)
        return await self._search(request, resource_type, _search_params(request))

    async def search_type_post(self, request: Request) -> Response:
        resource_type = _type(request)
        return await self._search(request, resource_type, await http.form_params(request))

    async def search_compartment(self, request: Request) -> Response:
        compartment = _compartment(request)
        return await self._search(request, compartment[2], _search_params(request), compartment)

    async def search_compartment_post(self, request: Request) -> Response:
        compartment = _compartment(request)
        params = await http.form_params(request)
        return await self._search(request, compartment[2], params, compartment)

    async def history_type(self, request: Request) -> Response:
        return await self._history(request, _type(request), None)

    # -- system level ----------------------------------------------------------------

    async def search_system(self, request: Request) -> Response:
        return await self._search(request, None, _search_params(request))

    async def search_system_post(self, request: Request) -> Response:
        return await self._search(request, None, await http.form_params(request))

    async def history_system(self, request: Request) -> Response:
        return await self._history(request, None, None)

    async def bundle(self, request: Request) -> Response:
        bundle = await http.json_body(request)
        response = await process_bundle(
            self.store, self.ctx, bundle, base_url=self._base(request),
            prefer=http.return_preference(request, default="minimal"),
        )
        return http.json_response(jsonutil.dumps(response))

    async def metadata(self, request: Request) -> Response:
        base = self._base(request)
        content = self._capability.get(base)
        if content is None:
            assert self.capability_builder is not None
            content = jsonutil.dumps(self.capability_builder(base))
            if len(self._capability) < 16:  # one per Host the clients use
                self._capability[base] = content
        return http.json_response(content)

    # -- shared ----------------------------------------------------------------------

    async def _search(
        self, request: Request, resource_type: str | None, params: list[tuple[str, str]],
        compartment: tuple[str, str, str] | None = None,
    ) -> Response:
        from search.chain import compartment_search
        from search.query import parse_search

        strict = http.prefer(request).get("handling") == "strict"
        # a reference given as an absolute URL on this base matches the stored Type/id
        base = self._base(request)
        query: SearchQuery
        if compartment is None:
            query = parse_search(resource_type, params, strict=strict, base_url=base)
            path = resource_type or ""
        else:
            query = compartment_search(*compartment, params, strict=strict, base_url=base)
            path = "/".join(compartment)
        page = await self.store.search(self.ctx, query)
        bundle = views.searchset(page, query, base, path, raw=True)
        return http.json_response(jsonutil.dumps(bundle))

    async def _history(
        self, request: Request, resource_type: str | None, resource_id: str | None
    ) -> Response:
        params = _search_params(request)
        count, offset = views.history_paging(params)
        since = dict(params).get("_since")
        versions, total = await self.store.history(
            self.ctx, resource_type, resource_id, since=since, count=count, offset=offset
        )
        path = "/".join(p for p in (resource_type, resource_id, "_history") if p)
        bundle = views.history(
            versions, total, self._base(request), path,
            [(k, v) for k, v in params if k == "_since"], count, offset, raw=True,
        )
        return http.json_response(jsonutil.dumps(bundle))


__all__ = ["Handlers"]
