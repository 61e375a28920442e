"""Bundles that present stored versions: searchset and history (R4 bundle.html,
http.html#history), shared by the REST API and Bundle GET entries."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from fhir_server import jsonutil, shaping
from fhir_server.errors import Issue, invalid, operation_outcome
from fhir_server.storage.base import SearchPage, StoredResource
from search.query import MAX_OFFSET

if TYPE_CHECKING:
    from search.query import SearchQuery
    from search.result import ResultParams

_CURSOR = "_cursor"  # search.cursor.PARAMETER
_PAGING = frozenset({"_count", "_offset", _CURSOR})
# Where the extra parameters go in a link: before sorting, paging and totals.
_RESULT_CONTROL = frozenset({"_sort", "_count", "_offset", "_total", _CURSOR})


def status_line(status: int) -> str:
    """Bundle.entry.response.status: the code and its reason phrase, e.g. "201 Created"."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def location(stored: StoredResource) -> str:
    return f"{stored.resource_type}/{stored.id}/_history/{stored.version}"


def full_url(base_url: str, stored: StoredResource) -> str:
    container = stored.container
    if container is not None:
        # a contained resource (_containedType=contained): its container's URL and
        # "#" with its local id, the form of a local reference to it
        return f"{base_url}/{container[0]}/{container[1]}#{stored.id}"
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
    url: str,
    params: Sequence[tuple[str, str]],
    count: int,
    offset: int,
    total: int | None,
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


def search_links(
    url: str,
    params: Sequence[tuple[str, str]],
    count: int,
    offset: int,
    total: int | None,
    shown: int,
    next_cursor: str | None = None,
) -> list[dict[str, str]]:
    """self, first, previous, next and last (R4 http.html#paging), each keeping every
    parameter the server understood.

    self repeats the request as understood (with its _cursor, if any). next follows the
    keyset cursor the store handed out when it did (search.cursor), so the next page
    neither skips nor repeats a resource while others write; otherwise it, previous and
    last page by _offset. previous is given only for offset pages (a cursor leads one way)
    and last only when the total is known."""
    kept = [(k, v) for k, v in params if k not in _PAGING]
    cursor_now = next((v for k, v in params if k == _CURSOR), None)

    def page(at: int) -> list[tuple[str, str]]:
        return [*kept, ("_count", str(count))] + ([("_offset", str(at))] if at else [])

    current = [*kept, ("_count", str(count)), (_CURSOR, cursor_now)] if cursor_now else page(offset)
    links = [_link("self", url, current)]
    if count <= 0:
        return links
    links.append(_link("first", url, page(0)))
    if offset > 0 and cursor_now is None:
        links.append(_link("previous", url, page(max(offset - count, 0))))
    if next_cursor is not None:
        links.append(_link("next", url, [*kept, ("_count", str(count)), (_CURSOR, next_cursor)]))
    elif cursor_now is None:
        more = offset + shown < total if total is not None else shown >= count
        if more:
            links.append(_link("next", url, page(offset + count)))
    last = max(total - 1, 0) // count * count if total is not None else None
    if last is not None and last <= MAX_OFFSET:  # deeper offsets are a 400 (search.query)
        links.append(_link("last", url, page(last)))
    return links


def understood_params(query: SearchQuery, system: bool) -> list[tuple[str, str]]:
    """Every parameter the server applied, as (name, value), for the Bundle's links:
    the filters and paging of the query, its chains and _has, _type on a system search,
    and the result parameters (_include, _summary, ...)."""
    from search.chain import link_params

    params = query.to_params()
    extra = link_params(query.links) + query.result.to_params()
    if system and query.types:
        extra.insert(0, ("_type", ",".join(query.types)))
    cut = next((i for i, (name, _) in enumerate(params) if name in _RESULT_CONTROL), len(params))
    return [*params[:cut], *extra, *params[cut:]]


def _entry(
    base_url: str, stored: StoredResource, mode: str, raw: bool, result: ResultParams | None
) -> dict[str, Any]:
    resource: Any
    if result is not None and stored.resource is not None:
        resource = shaping.shape(stored.resource, result)
    else:
        resource = resource_value(stored, raw)
    return {"fullUrl": full_url(base_url, stored), "resource": resource, "search": {"mode": mode}}


def searchset(
    page: SearchPage, query: SearchQuery, base_url: str, path: str, *, raw: bool = False,
    keep_types: bool | None = None,
) -> dict[str, Any]:
    """A searchset Bundle for one page of matches and what _include/_revinclude added
    (search.mode include); `path` is the searched endpoint relative to the base
    ("Patient", "Patient/123/Observation", or "" for a system search). `keep_types`:
    whether the links carry `_type` (default: on a system search only; a compartment
    search across types `Patient/1/*?_type=...` keeps the one its client gave)."""
    url = f"{base_url}/{path}" if path else base_url
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = search_links(
        url,
        understood_params(query, system=not path if keep_types is None else keep_types),
        query.count,
        query.offset,
        # an estimated total cannot place the last page or end the next links
        page.total if query.total == "accurate" else None,
        len(page.resources),
        getattr(page, "next_cursor", None),
    )
    if query.result.summary == "count":
        return bundle
    result = query.result if shaping.shapes(query.result) else None
    entries = [_entry(base_url, stored, "match", raw, result) for stored in page.resources]
    entries += [_entry(base_url, stored, "include", raw, result) for stored in page.included]
    warnings: list[Issue] = []
    if page.included_truncated:
        warnings.append(Issue(
            "too-costly",
            f"Only the first {len(page.included)} included resources are returned",
            severity="warning",
        ))
    # lenient handling (the default) ignores unknown parameters: say which, so that a
    # typo (`patinet=`) is not taken for a search that matched everything. Names only:
    # values may carry patient data.
    for name in dict.fromkeys(name for name, _ in query.ignored):
        warnings.append(Issue(
            "not-supported",
            f"The search parameter '{name[:100]}' is unknown or not applied here and was "
            "ignored (send Prefer: handling=strict to have it refused)",
            severity="warning",
            expression=(name[:100],),
        ))
    if warnings:
        entries.append({"resource": operation_outcome(warnings), "search": {"mode": "outcome"}})
    bundle["entry"] = entries
    return bundle


def shaped_body(stored: StoredResource, params: Sequence[tuple[str, str]]) -> bytes | None:
    """The body of a read, cut down when the request asks for _summary or _elements
    (R4 search.html#summary: they apply to read as well as search)."""
    wanted = [(k, v) for k, v in params if k.partition(":")[0] in ("_summary", "_elements")]
    if not wanted or stored.body is None:
        return stored.body
    from search.result import parse_result_params

    result = parse_result_params(wanted)
    if not shaping.shapes(result) or stored.resource is None:
        return stored.body
    return jsonutil.dumps(shaping.shape(stored.resource, result))


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
    """_count (default 50, at most 1000; 0: the total only, as in a search) and _offset
    of a history request."""
    values = dict(params)
    return (
        _whole(values.get("_count"), 50, "_count", 0, 1000),
        _whole(values.get("_offset"), 0, "_offset", 0, 10**9),
    )


def history_anchor(text: str | None) -> int | None:
    """The `_anchor` of a history page link: how many versions there were when the
    first page was read (None on a first page)."""
    return None if text is None else _whole(text, 0, "_anchor", 0, 10**15)


def _whole(text: str | None, default: int, name: str, low: int, high: int) -> int:
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 12:  # not "²"
        raise invalid(f"{name} must be a whole number", name)
    return max(low, min(int(text), high))
