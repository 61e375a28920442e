"""Bundles that present stored versions: searchset and history (R4 bundle.html,
http.html#history), shared by the REST API and Bundle GET entries."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from fhir_server.errors import invalid
from fhir_server.storage.base import SearchPage, StoredResource

if TYPE_CHECKING:
    from search.query import SearchQuery

_PAGING = frozenset({"_count", "_offset"})


def status_line(status: int) -> str:
    """Bundle.entry.response.status: the code and its reason phrase, e.g. "201 Created"."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def location(stored: StoredResource) -> str:
    return f"{stored.resource_type}/{stored.id}/_history/{stored.version}"


def full_url(base_url: str, stored: StoredResource) -> str:
    return f"{base_url}/{stored.resource_type}/{stored.id}"


def resource_value(stored: StoredResource, raw: bool) -> Any:
    """The resource for a Bundle entry; with `raw` the stored bytes go out as they are
    (no parse and re-serialise), which only jsonutil.dumps understands."""
    if raw and stored.body is not None:
        return orjson.Fragment(stored.body)
    return stored.resource


def _link(relation: str, url: str, params: Sequence[tuple[str, str]]) -> dict[str, str]:
    return {"relation": relation, "url": f"{url}?{urlencode(params)}" if params else url}


def paging_links(
    url: str, params: Sequence[tuple[str, str]], count: int, offset: int, total: int | None,
    shown: int,
) -> list[dict[str, str]]:
    """self, and next/previous when there are more pages, as _count/_offset links."""
    kept = [(k, v) for k, v in params if k not in _PAGING]

    def page(at: int) -> list[tuple[str, str]]:
        return [*kept, ("_count", str(count)), ("_offset", str(at))]

    links = [_link("self", url, page(offset))]
    more = offset + shown < total if total is not None else shown >= count > 0
    if more and count > 0:
        links.append(_link("next", url, page(offset + count)))
    if offset > 0:
        links.append(_link("previous", url, page(max(offset - count, 0))))
    return links


def searchset(
    page: SearchPage, query: SearchQuery, base_url: str, path: str, *, raw: bool = False
) -> dict[str, Any]:
    """A searchset Bundle for one page of matches; `path` is the searched endpoint
    relative to the base ("Patient", or "" for a system search)."""
    url = f"{base_url}/{path}" if path else base_url
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = paging_links(
        url, query.to_params(), query.count, query.offset, page.total, len(page.resources)
    )
    bundle["entry"] = [
        {
            "fullUrl": full_url(base_url, stored),
            "resource": resource_value(stored, raw),
            "search": {"mode": "match"},
        }
        for stored in page.resources
    ]
    return bundle


def history_entry(base_url: str, stored: StoredResource, *, raw: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": full_url(base_url, stored)}
    if not stored.deleted:
        entry["resource"] = resource_value(stored, raw)
    if stored.method == "POST":
        request = {"method": "POST", "url": stored.resource_type}
        status = 201
    else:
        request = {"method": stored.method, "url": f"{stored.resource_type}/{stored.id}"}
        status = 204 if stored.deleted else 200
    entry["request"] = request
    entry["response"] = {
        "status": status_line(status),
        "etag": f'W/"{stored.version}"',
        "lastModified": stored.last_updated,
    }
    return entry


def history(
    versions: Sequence[StoredResource],
    total: int,
    base_url: str,
    path: str,
    params: Sequence[tuple[str, str]],
    count: int,
    offset: int,
    *,
    raw: bool = False,
) -> dict[str, Any]:
    """A history Bundle (newest first); deleted versions carry request.method DELETE
    and no resource."""
    url = f"{base_url}/{path}" if path else base_url
    return {
        "resourceType": "Bundle",
        "type": "history",
        "total": total,
        "link": paging_links(url, params, count, offset, total, len(versions)),
        "entry": [history_entry(base_url, stored, raw=raw) for stored in versions],
    }


def history_paging(params: Sequence[tuple[str, str]]) -> tuple[int, int]:
    """_count (default 50, at most 1000) and _offset of a history request."""
    values = dict(params)
    return (
        _whole(values.get("_count"), 50, "_count", 1, 1000),
        _whole(values.get("_offset"), 0, "_offset", 0, 10**9),
    )


def _whole(text: str | None, default: int, name: str, low: int, high: int) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or len(text) > 12:
        raise invalid(f"{name} must be a whole number", name)
    return max(low, min(int(text), high))
