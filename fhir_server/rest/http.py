"""HTTP details of the FHIR REST API: content negotiation, request bodies, the
Prefer header and the headers of a resource response (R4 http.html)."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from fhir_server import jsonutil
from fhir_server.errors import FHIRError, Issue, operation_outcome
from fhir_server.storage.base import StoredResource

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json; charset=utf-8"
PLAIN_JSON = "application/json; charset=utf-8"
FHIR_VERSION = "4.0"  # the fhirVersion MIME parameter value of R4
JSON_MEDIA_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
_JSON_FORMATS = JSON_MEDIA_TYPES | {"json"}
_FHIR_MEDIA_TYPES = frozenset({"application/fhir+json", "application/json+fhir"})
_ACCEPT_ANY = frozenset({"*/*", "application/*"})
JSON_PATCH = "application/json-patch+json"
MAX_BODY_BYTES = 64 * 2**20  # a large transaction Bundle fits; a runaway upload does not
_FORM = "application/x-www-form-urlencoded"


def json_response(
    content: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(content=content, status_code=status, headers=headers, media_type=FHIR_JSON)


def outcome_response(exc: FHIRError, headers: dict[str, str] | None = None) -> Response:
    if isinstance(exc, MethodNotAllowed):
        headers = {**(headers or {}), "Allow": ", ".join(exc.allow)}
    return json_response(jsonutil.dumps(exc.outcome()), exc.status, headers)


class MethodNotAllowed(FHIRError):
    """405: the path is served, with other methods (RFC 9110 15.5.6: Allow lists them)."""

    def __init__(self, method: str, allow: list[str]) -> None:
        super().__init__(405, [Issue(
            "not-supported", f"{method} is not supported on this path; it takes "
            f"{', '.join(allow)}")])
        self.allow = allow


def check_other_methods(request: Request) -> None:
    """Raise MethodNotAllowed when another route serves this path with other methods.

    A route such as /$reindex (POST) or /metadata (GET) does not match a GET or DELETE,
    so the router falls through to /{type} or /{type}/{id}, whose handlers call this
    before saying "Unknown resource type"."""
    allowed: set[str] = set()
    for route in getattr(request.scope.get("router"), "routes", ()):
        match, _ = route.matches(request.scope)
        if match is Match.PARTIAL:
            allowed |= set(getattr(route, "methods", None) or ())
    if allowed:
        raise MethodNotAllowed(request.method, sorted(allowed))


def information(note: str) -> dict[str, Any]:
    return operation_outcome([Issue("informational", note, severity="information")])


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _fhir_version_fits(part: str) -> bool:
    """Whether a media range's fhirVersion parameter, if any, names R4 (4.0, 4.0.1;
    http.html#version-parameter)."""
    for parameter in part.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "fhirversion":
            version = value.strip().strip('"')
            return version == FHIR_VERSION or version.startswith(FHIR_VERSION + ".")
    return True


def check_format(request: Request) -> str:
    """JSON is the only format: `_format` and Content-Type naming another are 415, an
    Accept header that rules JSON out (or asks for another FHIR version) is 406 (R4
    http.html#mime-type). Returns the Content-Type of the answer: PLAIN_JSON when the
    client asked for application/json (both name this JSON), else FHIR_JSON."""
    if b"_format" in request.scope["query_string"]:
        requested = request.query_params.get("_format")
        if requested is not None and _media_type(requested) not in _JSON_FORMATS:
            raise FHIRError.simple(
                415, "not-supported", "This server speaks JSON only (_format=json)", "_format"
            )
        if requested is not None:  # _format overrides Accept (http.html#mime-type)
            return PLAIN_JSON if _media_type(requested) == "application/json" else FHIR_JSON
    accept = request.headers.get("accept")
    if not accept:
        return FHIR_JSON
    parts = [part for part in accept.split(",") if _fhir_version_fits(part)]
    types = {_media_type(part) for part in parts}
    if not types & (JSON_MEDIA_TYPES | _ACCEPT_ANY) and "" not in types:
        raise FHIRError.simple(
            406, "not-supported",
            f"This server answers in application/fhir+json for FHIR {FHIR_VERSION} only; "
            "the Accept header excludes it",
        )
    if "application/json" in types and not types & _FHIR_MEDIA_TYPES:
        return PLAIN_JSON
    return FHIR_JSON


def answer_as(response: Response, content_type: str) -> Response:
    """`response` with the Content-Type check_format chose, if it is a JSON answer."""
    if content_type != FHIR_JSON and response.headers.get("content-type") == FHIR_JSON:
        response.headers["content-type"] = content_type
    return response


async def json_body(request: Request, media_types: frozenset[str] = JSON_MEDIA_TYPES) -> Any:
    """The request body parsed as JSON, decimals kept exactly (jsonutil.loads)."""
    content_type = request.headers.get("content-type")
    if content_type and _media_type(content_type) not in media_types:
        raise FHIRError.simple(
            415, "not-supported",
            f"Send {' or '.join(sorted(media_types))}; this server does not read "
            f"{_media_type(content_type)[:60]}",
        )
    if content_type and not _fhir_version_fits(content_type):
        # http.html#version-parameter: a body of another FHIR version is refused with 415
        raise FHIRError.simple(
            415, "not-supported",
            f"This server reads FHIR {FHIR_VERSION} (R4) only; the Content-Type names "
            "another fhirVersion",
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise FHIRError.simple(
            413, "too-costly", f"The body is larger than {MAX_BODY_BYTES // 2**20} MiB"
        )
    body = await request.body()
    if body.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, which RFC 8259 lets us ignore
        body = body[3:]
    if not body.strip():
        raise FHIRError.simple(400, "structure", "The request body is empty")
    try:
        return jsonutil.loads(body)
    except UnicodeDecodeError:
        raise FHIRError.simple(400, "structure", "The request body is not UTF-8") from None
    except RecursionError:
        raise FHIRError.simple(400, "structure", "The JSON body is nested too deeply") from None
    except ValueError as exc:
        # JSONDecodeError's message says where, never what: the content is not echoed.
        where = ""
        if isinstance(exc, json.JSONDecodeError):
            where = f": {exc.msg} at line {exc.lineno} column {exc.colno}"
        elif isinstance(exc, jsonutil.DuplicateKeyError):
            where = f": {exc}"  # names the key (a property name, not content)
        raise FHIRError.simple(400, "structure", f"The body is not valid JSON{where}") from None


async def form_params(request: Request) -> list[tuple[str, str]]:
    """The parameters of POST [type]/_search: form body plus URL query (R4 search.html)."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "_format"]
    content_type = request.headers.get("content-type")
    body = await request.body()
    if body:
        if content_type is None or _media_type(content_type) != _FORM:
            raise FHIRError.simple(
                415, "not-supported", f"POST _search takes a body of type {_FORM}"
            )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise FHIRError.simple(400, "structure", "The form body is not UTF-8") from None
        params.extend(parse_qsl(text, keep_blank_values=True))
    return params


def prefer(request: Request) -> dict[str, str]:
    """The Prefer header's preferences, e.g. {"return": "minimal", "handling": "strict"}."""
    out: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for part in header.split(","):
            key, _, value = part.strip().partition("=")
            if key:
                out[key.strip().lower()] = value.strip().strip('"')
    return out


def return_preference(request: Request, default: str = "representation") -> str:
    value = prefer(request).get("return", default)
    return value if value in ("minimal", "representation", "OperationOutcome") else default


@lru_cache(maxsize=4096)
def http_date(instant: str) -> str:
    """Last-Modified: the FHIR instant as an HTTP date (RFC 9110 IMF-fixdate)."""
    return format_datetime(datetime.fromisoformat(instant), usegmt=True)


def version_headers(stored: StoredResource) -> dict[str, str]:
    return {"ETag": f'W/"{stored.version}"', "Last-Modified": http_date(stored.last_updated)}


# RFC 9110 Host: a reg-name / IPv4 or a bracketed IPv6 literal, then an optional port
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")


def base_url(request: Request, base_path: str) -> str:
    """The server base as the client addressed it, e.g. http://127.0.0.1:8080/fhir.
    A Host header that is not a host name or address is a 400: it would otherwise be
    echoed into every link and Location (set --base-url to ignore Host altogether)."""
    scope = request.scope
    app = scope.get("app")
    public: tuple[str, str] | None = getattr(getattr(app, "state", None), "public_base", None)
    if public is not None:
        fhir_base, fhir_path = public
        if base_path == fhir_path:
            return fhir_base
        prefix = fhir_base[: -len(fhir_path)] if fhir_path and fhir_base.endswith(fhir_path) \
            else "{0.scheme}://{0.netloc}".format(urlsplit(fhir_base))
        return prefix + base_path
    host = request.headers.get("host")
    if host is not None and not _HOST.fullmatch(host):
        raise FHIRError.simple(400, "value", "The Host header is not a host name or address")
    if not host:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "localhost"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{base_path}"


def public_base(base_url: str | None, base_path: str) -> tuple[str, str] | None:
    """A configured public FHIR base and the path the FHIR API is served at: other routes
    (/admin, /dicomweb) are built from the public base minus that path, or from its
    origin when a proxy maps the FHIR API to another path."""
    return (base_url.rstrip("/"), base_path) if base_url else None
