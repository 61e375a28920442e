"""The feeds' counters and the dead-letter queue over HTTP, for the operator console.

    GET  /admin/feeds                       counters per feed (JSON)
    GET  /admin/deadletter?feed=&_count=&before=
                                            rejected inputs, newest first, without content
    GET  /admin/deadletter/{id}             one rejected input: feed, reason, received, size
    GET  /admin/deadletter/{id}/content     the rejected input as received (a download)
    POST /admin/deadletter/{id}/retry       process it again; the outcome

Raw inputs hold patient data: only `content` returns them, one input at a time, and
the listing never does; an input that was stored (or settled by a retry) is not a dead
letter and is answered 404 (an unknown `feed` is 400). These routes have no authorisation of their own yet: they are
for the operator's network until SMART on FHIR authorisation guards them.
Errors are OperationOutcomes, as everywhere else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from adapters.pipeline import Pipeline
from fhir_server.errors import FHIRError
from fhir_server.rest import http
from fhir_server.rest.handlers import Handlers
from fhir_server.storage.base import RawInput

PREFIX = "/admin"
DEFAULT_COUNT = 50
MAX_COUNT = 500
# what a downloaded raw input is, by feed (a CSV input is a row envelope, JSON)
CONTENT_TYPES = {"hl7v2": "x-application/hl7-v2+er7", "csv": "application/json",
                 "dicom": "application/dicom"}
_JSON = "application/json; charset=utf-8"

Endpoint = Callable[[Request], Awaitable[Response]]


class FeedsHttp:
    def __init__(self, handlers: Handlers) -> None:
        self._handlers = handlers

    @property
    def pipeline(self) -> Pipeline:
        return self._handlers.pipeline

    async def counters(self, request: Request) -> Response:
        return _json({"feeds": await self.pipeline.counters(self._handlers.ctx)})

    async def listing(self, request: Request) -> Response:
        params = request.query_params
        feed = params.get("feed") or None
        if feed is not None:
            known = sorted(await self.pipeline.counters(self._handlers.ctx))
            if feed not in known:
                shown = feed[:40] if feed[:40].isprintable() else "given"
                raise FHIRError.simple(400, "value", f"feed {shown!r} is not known "
                                       f"(known: {', '.join(known)})", "feed")
        count = _number(params.get("_count"), "_count")
        count = DEFAULT_COUNT if count is None else count
        if not 1 <= count <= MAX_COUNT:
            raise FHIRError.simple(400, "value", f"_count must be 1 to {MAX_COUNT}", "_count")
        before = _number(params.get("before"), "before")
        if before is not None and before < 1:
            raise FHIRError.simple(400, "value", "before must be an input id", "before")
        found = await self.pipeline.rejected(self._handlers.ctx, feed, count + 1, before)
        items = [_summary(raw, request) for raw in found[:count]]
        result: dict[str, Any] = {"items": items, "next": None}
        if len(found) > count:
            query = {k: v for k, v in (("feed", feed), ("_count", str(count)),
                                       ("before", str(found[count - 1].id))) if v}
            result["next"] = f"{_base(request)}/deadletter?{urlencode(query)}"
        return _json(result)

    async def show(self, request: Request) -> Response:
        raw = await self._input(request)
        detail = _summary(raw, request)
        detail["result"] = _safe_result(raw)
        return _json(detail)

    async def content(self, request: Request) -> Response:
        raw = await self._input(request)
        media = CONTENT_TYPES.get(raw.feed, "application/octet-stream")
        headers = {"Content-Disposition": f'attachment; filename="input-{raw.id}.{raw.feed}"',
                   "Cache-Control": "no-store"}
        body = raw.content
        if raw.feed == "dicom":
            body = await asyncio.to_thread(_dicom_file, self._handlers.store, raw)
        return Response(body, media_type=media, headers=headers)

    async def retry(self, request: Request) -> Response:
        input_id = _input_id(request)
        try:
            outcome = await self.pipeline.retry(self._handlers.ctx, input_id)
        except LookupError:
            raise FHIRError.simple(404, "not-found", f"input {input_id} is not known") from None
        except ValueError as exc:  # the feed's translator is not in this build
            raise FHIRError.simple(409, "not-supported", str(exc)) from None
        body = {"input": input_id, "status": outcome.status, "reason": outcome.reason,
                "stored_as": outcome.input_id if outcome.status != "rejected" else None}
        return _json(body)

    async def _input(self, request: Request) -> RawInput:
        input_id = _input_id(request)
        raw = await self._handlers.store.get_input(self._handlers.ctx, input_id)
        # Only dead letters are served: a stored input's content is the patient's message,
        # and these routes are the dead-letter queue, not an archive of every feed.
        if raw is None or raw.status != "rejected":
            raise FHIRError.simple(404, "not-found",
                                   f"input {input_id} is not in the dead-letter queue")
        return raw


def _summary(raw: RawInput, request: Request) -> dict[str, Any]:
    """What the listing shows of an input: never its content."""
    received = raw.result if raw.status == "rejected" and isinstance(raw.result, dict) else {}
    return {
        "id": raw.id,
        "feed": raw.feed,
        "status": raw.status,
        "reason": raw.reason,
        "received": raw.received_at,
        "times_received": int(received.get("received", 1)),
        "last_received": received.get("last_received", raw.received_at),
        "size": _size(raw),
        "content": f"{_base(request)}/deadletter/{raw.id}/content",
        "retry": f"{_base(request)}/deadletter/{raw.id}/retry",
    }


def _size(raw: RawInput) -> int:
    """The size of what was received: for DICOM the file the kept reference names."""
    if raw.feed == "dicom":
        from adapters.dicom.translate import decode_reference
        from adapters.translation import TranslationError

        try:
            return decode_reference(raw.content)[1]
        except TranslationError:
            pass
    return len(raw.content)


def _dicom_file(store: Any, raw: RawInput) -> bytes:
    """A DICOM input is kept as a reference to its file in the blob store: the file."""
    from adapters.dicom.translate import decode_reference, load_blob
    from adapters.translation import TranslationError
    from fhir_server.storage.blobs import blob_store_for

    try:
        decode_reference(raw.content)
        return load_blob(blob_store_for(store), raw.content)
    except TranslationError:
        raise FHIRError.simple(404, "not-found", f"the file of input {raw.id} is not kept "
                               "in the blob store") from None


def _safe_result(raw: RawInput) -> dict[str, Any] | None:
    """What a stored input made (resource types and the criteria they are found by)."""
    if raw.status != "stored" or not isinstance(raw.result, dict):
        return None
    return {"resources": raw.result.get("resources", []),
            "duplicate_of": raw.result.get("duplicate_of")}


def _input_id(request: Request) -> int:
    text = request.path_params["input_id"]
    if not text.isdigit() or len(text) > 18:
        raise FHIRError.simple(404, "not-found", "There is no input with this id")
    return int(text)


def _number(text: str | None, name: str) -> int | None:
    if text is None or text == "":
        return None
    if not text.lstrip("-").isdigit() or len(text) > 18:
        raise FHIRError.simple(400, "value", f"{name} must be a whole number", name)
    return int(text)  # a negative one is refused by the range check of its caller


def _base(request: Request) -> str:
    return http.base_url(request, PREFIX)


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), media_type=_JSON,
                    headers={"Cache-Control": "no-store"})


def routes(handlers: Handlers) -> list[BaseRoute]:
    """The routes for fhir_server.app.OTHER_ROUTES."""
    feeds = FeedsHttp(handlers)

    def guarded(handler: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except FHIRError as exc:
                return http.outcome_response(exc)

        return endpoint

    return [
        Route(f"{PREFIX}/feeds", guarded(feeds.counters), methods=["GET"]),
        Route(f"{PREFIX}/deadletter", guarded(feeds.listing), methods=["GET"]),
        Route(f"{PREFIX}/deadletter/{{input_id}}", guarded(feeds.show), methods=["GET"]),
        Route(f"{PREFIX}/deadletter/{{input_id}}/content", guarded(feeds.content),
              methods=["GET"]),
        Route(f"{PREFIX}/deadletter/{{input_id}}/retry", guarded(feeds.retry),
              methods=["POST"]),
    ]
