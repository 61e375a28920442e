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
    from adapters.pipeline import Pipeline
    from search.query import SearchQuery

_IGNORED_PARAMS = frozenset({"_format", "_pretty"})


def _type(request: Request) -> str:
    resource_type: str = request.path_params["type"]
    if resource_type not in RESOURCE_TYPES:
        http.check_other_methods(request)  # e.g. DELETE /metadata: 405, not "Unknown type"
        shown = f" {resource_type}" if resource_type.isalnum() and len(resource_type) < 64 else ""
        raise FHIRError.simple(404, "not-supported", f"Unknown resource type{shown}")
    return resource_type


def _id(request: Request) -> str:
    resource_id: str = request.path_params["id"]
    if resource_id.startswith("$"):
        http.check_other_methods(request)  # e.g. PUT ValueSet/$expand
        raise _unknown_operation(request, resource_id)
    return operations.check_id(resource_id)


def _unknown_operation(request: Request, name: str) -> FHIRError:
    """404 for [path]/$name where no route serves it, naming the paths that do."""
    handlers = getattr(getattr(request.scope.get("app"), "state", None), "handlers", None)
    base_path: str = getattr(handlers, "base_path", "")
    served = sorted({
        path[len(base_path) + 1:].replace("{type}", "[type]")
        for route in getattr(request.scope.get("router"), "routes", ())
        if isinstance(path := getattr(route, "path", None), str)
        and path.startswith(base_path + "/") and path.endswith("/" + name)
    })
    if not served:
        return FHIRError.simple(404, "not-supported", f"This server has no operation {name[:64]}")
    return FHIRError.simple(
        404, "not-supported",
        f"{name} is not served at this level; this server serves it at "
        + ", ".join(served),
    )


def _compartment(request: Request) -> tuple[str, str, str]:
    """[compartment type], [id] and the searched type (or "*") of a compartment search."""
    target: str = request.path_params["compartment"]
    if target.startswith("$"):  # an instance-level operation that is not routed
        raise _unknown_operation(request, target)
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
        self._capability: dict[tuple[str, Any], bytes] = {}
        # set by the app: the CapabilityStatement for a base URL
        self.capability_builder: Callable[[str], dict[str, Any]] | None = None
        # the write path of the feed endpoints ($ingest, /admin); `serve` hands over the
        # one its listeners use (one cap, one queue of identical inputs)
        self._pipeline: Pipeline | None = None

    @property
    def pipeline(self) -> Pipeline:
        """The app's pipeline, on the current store (the app may open its store at
        startup, store_factory)."""
        if self._pipeline is None or self._pipeline.store is not self.store:
            from adapters.pipeline import Pipeline

            self._pipeline = Pipeline(self.store)
        return self._pipeline

    @pipeline.setter
    def pipeline(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

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
        result = await operations.in_transaction(
            self.store, self.ctx, lambda txn: operations.update(
                txn, resource, resource_type, resource_id, if_match=_if_match(request),
                base_url=self._base(request),
            ),
        )
        return self._written(request, result)

    async def patch(self, request: Request) -> Response:
        resource_type, resource_id = _type(request), _id(request)
        operations_ = await http.json_body(request, frozenset({http.JSON_PATCH}))
        result = await operations.in_transaction(
            self.store, self.ctx, lambda txn: operations.patch(
                txn, resource_type, resource_id, operations_, if_match=_if_match(request),
                base_url=self._base(request),
            ),
        )
        return self._written(request, result)

    async def delete(self, request: Request) -> Response:
        resource_type, resource_id = _type(request), _id(request)
        result = await operations.in_transaction(
            self.store, self.ctx, lambda txn: operations.delete(
                txn, resource_type, resource_id, if_match=_if_match(request)
            ),
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
        result = await operations.in_transaction(
            self.store, self.ctx, lambda txn: operations.create(
                txn, resource, resource_type, if_none_exist=request.headers.get("if-none-exist"),
                base_url=self._base(request),
            ),
        )
        return self._written(request, result)

    async def conditional_update(self, request: Request) -> Response:
        resource_type = _type(request)
        criteria = _criteria(request)
        resource = await http.json_body(request)
        result = await operations.in_transaction(
            self.store, self.ctx, lambda txn: operations.conditional_update(
                txn, resource, resource_type, criteria, if_match=_if_match(request),
                base_url=self._base(request),
            ),
        )
        return self._written(request, result)

    async def conditional_delete(self, request: Request) -> Response:
        resource_type = _type(request)
        criteria = _criteria(request)
        result = await operations.in_transaction(
            self.store, self.ctx, lambda txn: operations.conditional_delete(
                txn, resource_type, criteria, if_match=_if_match(request)
            ),
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
        from conformance.capability import custom_signature
        from terminology.capabilities import check_mode, terminology_capabilities

        base = self._base(request)
        mode = request.query_params.get("mode")
        check_mode(mode)  # full | normative | terminology (R4); others a 400
        if mode == "terminology":
            return http.json_response(jsonutil.dumps(
                await terminology_capabilities(self.store, self.ctx, base)))
        # custom SearchParameters change the statement once reindexed (search.custom)
        key = (base, custom_signature())
        content = self._capability.get(key)
        if content is None:
            assert self.capability_builder is not None
            content = jsonutil.dumps(self.capability_builder(base))
            if len(self._capability) >= 16:  # one per Host the clients use, at most 16
                self._capability.clear()
            self._capability[key] = content
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
        keep_types = None if compartment is None else any(name == "_type" for name, _ in params)
        bundle = views.searchset(page, query, base, path, raw=True, keep_types=keep_types)
        return http.json_response(jsonutil.dumps(bundle))

    async def _history(
        self, request: Request, resource_type: str | None, resource_id: str | None
    ) -> Response:
        """A history page. Versions are newest first and never go away, so a write only
        adds versions at the top: the links carry `_anchor`, the number of versions when
        the first page was read, and a later page skips what was added since (F7: pages
        stay stable while others write, as the search cursor does)."""
        params, ignored = _history_params(request)
        count, offset = views.history_paging(params)
        values = dict(params)
        since = values.get("_since")
        anchor = views.history_anchor(values.get("_anchor"))
        versions, total = await self.store.history(
            self.ctx, resource_type, resource_id, since=since, count=count, offset=offset
        )
        if anchor is not None and total > anchor:
            versions, _ = await self.store.history(
                self.ctx, resource_type, resource_id, since=since, count=count,
                offset=offset + total - anchor,
            )
        anchor = total if anchor is None or anchor > total else anchor
        path = "/".join(p for p in (resource_type, resource_id, "_history") if p)
        kept = [(k, v) for k, v in params if k == "_since"] + [("_anchor", str(anchor))]
        bundle = views.history(
            versions, anchor, self._base(request), path, kept, count, offset, raw=True,
        )
        # a history Bundle's entries must each be a version (bdl-3), so the parameters a
        # lenient history ignored are named in a Warning header (RFC 9110 299) instead of
        # the OperationOutcome entry a searchset carries
        headers = {"Warning": ", ".join(_ignored_warning(name) for name in ignored)}
        return http.json_response(jsonutil.dumps(bundle), headers=headers if ignored else None)


# R4 http.html#history: _count, _since, _at, _list; _offset and _anchor page
_HISTORY_PARAMS = frozenset({"_count", "_since", "_offset", "_anchor"})
_HISTORY_REFUSED = frozenset({"_at", "_list"})


def _history_params(request: Request) -> tuple[list[tuple[str, str]], list[str]]:
    """The history parameters and the names of those ignored. `_at` and `_list` (R4) are
    refused rather than ignored, since ignoring them answers a different question; a
    parameter given twice is refused (as in a search: which one was meant is unknown);
    other unknown ones are ignored unless Prefer: handling=strict (as in a search)."""
    params = _search_params(request)
    strict = http.prefer(request).get("handling") == "strict"
    seen: set[str] = set()
    ignored: list[str] = []
    for name, _ in params:
        if name in _HISTORY_REFUSED:
            raise invalid(f"{name} is not supported on history; use _since", name)
        if name in _HISTORY_PARAMS:
            if name in seen:
                raise invalid(f"'{name}' is given more than once", name)
            seen.add(name)
        elif strict:
            raise invalid(f"Unknown history parameter {name[:64]}", name[:64])
        elif name not in ignored:
            ignored.append(name)
    return [(k, v) for k, v in params if k in _HISTORY_PARAMS], ignored


def _ignored_warning(name: str) -> str:
    """One RFC 9110 Warning value naming an ignored parameter (printable ASCII only:
    the name comes from the client). Names only: values may carry patient data."""
    safe = "".join(c if " " <= c <= "~" else "?" for c in name[:100])
    safe = safe.replace("\\", "\\\\").replace('"', '\\"')
    return (f'299 fhir-fusion "The history parameter \'{safe}\' is unknown and was ignored '
            '(send Prefer: handling=strict to have it refused)"')


__all__ = ["Handlers"]
