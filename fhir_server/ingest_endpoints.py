"""POST [base]/$ingest: push one feed input over HTTP into the ingest pipeline.

The Content-Type chooses the feed: HL7v2 (x-application/hl7-v2+er7, application/hl7-v2)
one message per request; CSV (text/csv) with the `mapping` query parameter and
optional `encoding` (or a charset in the Content-Type) and `delimiter`; DICOM
(application/dicom) one Part 10 file. Answers:

- HL7v2/DICOM stored: 200 with the transaction-response Bundle of what was written;
  the same input again: 200 with an informational OperationOutcome (code duplicate).
- CSV: 200 with a batch-response Bundle, one entry per data row in file order (status
  201/200 for stored rows, 200 for rows already received, 422 with the line and reason
  for rejected rows, 204 for rows the mapping does not take); when every row taken was
  rejected, 422 with an OperationOutcome of one issue per row (its line and reason).
- Rejected input: 422 OperationOutcome with the reason; the input is kept in the
  dead-letter queue (/admin/deadletter) and can be re-processed.
- A file that cannot be read as a whole (encoding, header, unknown mapping) is 400 and
  nothing is kept; an unknown Content-Type is 415.
"""

from __future__ import annotations

import importlib
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from adapters.csv.ingest import RowOutcome
from adapters.pipeline import IngestResult, Pipeline
from fhir_server import jsonutil
from fhir_server.errors import FHIRError, Issue, operation_outcome
from fhir_server.rest import http
from fhir_server.rest.handlers import Handlers
from fhir_server.rest.routes import EndpointGroup, Interaction

OPERATION = "ingest"
HL7V2_TYPES = frozenset({"x-application/hl7-v2+er7", "application/hl7-v2",
                         "application/hl7-v2+er7"})
CSV_TYPES = frozenset({"text/csv", "application/csv"})
DICOM_TYPES = frozenset({"application/dicom"})
_ACCEPTED = "x-application/hl7-v2+er7 (or application/hl7-v2), text/csv, application/dicom"


def operation_definition(base_url: str) -> dict[str, Any]:
    """OperationDefinition/ingest (R4 operationdefinition.html)."""
    return {
        "resourceType": "OperationDefinition",
        "id": OPERATION,
        "url": f"{base_url}/OperationDefinition/{OPERATION}",
        "name": "Ingest",
        "title": "Push a legacy feed input (HL7v2, CSV, DICOM) into the ingest pipeline",
        "status": "active",
        "kind": "operation",
        "affectsState": True,
        "description": (
            "The body is the input itself; its Content-Type chooses the feed: "
            "x-application/hl7-v2+er7 or application/hl7-v2 (one HL7v2 message), text/csv "
            "(rows mapped by the 'mapping' parameter), application/dicom (one DICOM Part 10 "
            "file). The input is kept, translated and stored with Provenance in one "
            "transaction; the same input twice stores nothing new. Returns the "
            "transaction-response Bundle (HL7v2, DICOM), a batch-response Bundle with one "
            "entry per row (CSV), or an OperationOutcome: 422 for a rejected input (kept "
            "in the dead-letter queue with its reason, re-processable), 400 for a file that "
            "cannot be read, 415 for another Content-Type."
        ),
        "code": OPERATION,
        "system": True,
        "type": False,
        "instance": False,
        "parameter": [
            {"name": "mapping", "use": "in", "min": 0, "max": "1", "type": "string",
             "documentation": "CSV only (required there): a built-in mapping name "
                              "(patients, lab-results, vital-signs)"},
            {"name": "encoding", "use": "in", "min": 0, "max": "1", "type": "string",
             "documentation": "CSV only: the file's encoding (e.g. utf-8, gb18030, latin-1); "
                              "default: the Content-Type charset, else detected"},
            {"name": "delimiter", "use": "in", "min": 0, "max": "1", "type": "string",
             "documentation": "CSV only: one character; default: sniffed from the header"},
            {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle",
             "documentation": "transaction-response (HL7v2, DICOM) or batch-response (CSV)"},
        ],
    }  # fmt: skip


class IngestEndpoints:
    def __init__(self, handlers: Handlers) -> None:
        self._handlers = handlers

    @property
    def pipeline(self) -> Pipeline:
        return self._handlers.pipeline

    async def ingest(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        if media in CSV_TYPES:
            return await self._csv(request, content_type)
        if media in HL7V2_TYPES:
            return await self._hl7v2(request, _charset(content_type))
        if media in DICOM_TYPES:
            return await self._dicom(request)
        shown = media[:60] or "no Content-Type"
        raise FHIRError.simple(415, "not-supported",
                               f"$ingest takes {_ACCEPTED}; not {shown}")

    async def definition(self, request: Request) -> Response:
        base = http.base_url(request, self._handlers.base_path)
        return http.json_response(jsonutil.dumps(operation_definition(base)))

    async def _hl7v2(self, request: Request, charset: str | None = None) -> Response:
        from adapters.hl7v2.limits import check_message
        from adapters.hl7v2.mllp import DEFAULT_MAX_MESSAGE_BYTES
        from adapters.ingest import split_file

        # the same size cap as the MLLP listener's: one message is one message either way
        messages = split_file(await _body(request, DEFAULT_MAX_MESSAGE_BYTES), "hl7v2")
        if len(messages) != 1:
            raise FHIRError.simple(400, "structure", f"$ingest takes one HL7v2 message per "
                                   f"request; the body holds {len(messages)}")
        refused = check_message(messages[0], self.pipeline.max_resources)
        if refused is not None:
            kept = await self.pipeline.keep_rejected(self._handlers.ctx, "hl7v2", messages[0],
                                                     str(refused))
            raise FHIRError.simple(413, "too-costly", f"{refused} (kept as input "
                                   f"{kept.input_id})")
        message = messages[0]
        if charset:
            # the Content-Type charset takes precedence over MSH-18 (kept as UTF-8 with
            # MSH-18 saying so, for a retry); bytes not in it are refused, kept as rejected
            from adapters.hl7v2.charset import with_charset
            from adapters.hl7v2.errors import Hl7Error

            try:
                message = with_charset(message, charset)
            except Hl7Error as exc:
                kept = await self.pipeline.keep_rejected(self._handlers.ctx, "hl7v2",
                                                         message, str(exc))
                raise FHIRError.simple(400, "invalid", f"{exc} (kept as input "
                                       f"{kept.input_id})") from None
        result = await self.pipeline.ingest(self._handlers.ctx, "hl7v2", message)
        return _single(result, http.base_url(request, self._handlers.base_path))

    async def _dicom(self, request: Request) -> Response:
        try:
            dicom = importlib.import_module("adapters.dicom")
            ingest_dicom_bytes = dicom.ingest_dicom_bytes
        except (ImportError, AttributeError):
            raise FHIRError.simple(415, "not-supported",
                                   "DICOM input is not available in this build") from None
        result = await ingest_dicom_bytes(self.pipeline, self._handlers.ctx,
                                          await _body(request), source="http")
        return _single(result, http.base_url(request, self._handlers.base_path))

    async def _csv(self, request: Request, content_type: str) -> Response:
        from adapters.csv.ingest import ingest_csv
        from adapters.csv.mapping import MappingError, builtin_names
        from adapters.csv.reader import CsvFormatError

        params = request.query_params
        mapping = params.get("mapping")
        if not mapping:
            raise FHIRError.simple(400, "required", "CSV input needs the mapping parameter "
                                   "(e.g. mapping=lab-results)", "mapping")
        known = builtin_names()
        if mapping not in known:
            # a mapping file on the server's disk is for the CLI, not for any HTTP client
            raise FHIRError.simple(400, "value", "mapping must be a built-in mapping name "
                                   f"(known: {', '.join(known)})", "mapping")
        encoding = params.get("encoding") or _charset(content_type)
        try:
            summary = await ingest_csv(self.pipeline, self._handlers.ctx, await _body(request),
                                       mapping, encoding=encoding,
                                       delimiter=params.get("delimiter"))
        except MappingError as exc:
            raise FHIRError.simple(400, "value", str(exc), "mapping") from None
        except CsvFormatError as exc:
            raise FHIRError.simple(400, "structure", str(exc)) from None
        taken = [row for row in summary.rows if row.status != "skipped"]
        if taken and all(row.status == "rejected" for row in taken):
            issues = [Issue("processing", f"{row.reason} (kept as input {row.input_id})")
                      for row in taken]
            return http.json_response(jsonutil.dumps(operation_outcome(issues)), 422)
        entries = [_row_entry(row) for row in summary.rows]
        bundle = {"resourceType": "Bundle", "type": "batch-response", "entry": entries}
        return http.json_response(jsonutil.dumps(bundle))


def _charset(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return None


async def _body(request: Request, limit: int = http.MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length", "")
    too_large = f"The body is larger than {limit // 2**20} MiB"
    if declared.isdigit() and int(declared) > limit:
        raise FHIRError.simple(413, "too-costly", too_large)
    body = await request.body()
    if len(body) > limit:
        raise FHIRError.simple(413, "too-costly", too_large)
    if not body.strip():
        raise FHIRError.simple(400, "structure", "The request body is empty")
    return body


def _single(result: IngestResult, base: str) -> Response:
    if result.status == "stored":
        return http.json_response(jsonutil.dumps(_absolute(result.response or {}, base)))
    if result.status == "duplicate":
        outcome = operation_outcome([Issue(
            "duplicate", f"This input was received before (input {result.input_id}); "
                         "nothing new was stored", severity="information")])
        return http.json_response(jsonutil.dumps(outcome))
    outcome = operation_outcome([Issue(
        "processing", f"{result.reason} (kept as input {result.input_id}; "
                      "POST /admin/deadletter/{id}/retry re-processes it)")])
    return http.json_response(jsonutil.dumps(outcome), 422)


def _absolute(response: dict[str, Any], base: str) -> dict[str, Any]:
    """The transaction-response with absolute fullUrls (Bundle.entry.fullUrl is an
    absolute URL or a urn); the pipeline stores without knowing the server's base."""
    entries = []
    for entry in response.get("entry", []):
        url = entry.get("fullUrl")
        if isinstance(url, str) and url.startswith("/"):
            entry = {**entry, "fullUrl": base + url}
        entries.append(entry)
    return {**response, "entry": entries} if entries else response


def _row_entry(row: RowOutcome) -> dict[str, Any]:
    if row.status in ("stored", "unchanged") and row.response:
        response = dict(row.response)
        note = f"line {row.line}" + (": already stored; this row changed nothing"
                                     if row.status == "unchanged" else "")
        response.setdefault("outcome", _note(note))
        return {"response": response}
    if row.status == "skipped":
        return {"response": {"status": "204 No Content", "outcome": _note(
            f"line {row.line}: not a row this mapping takes (skipped)")}}
    if row.status == "rejected":
        return {"response": {"status": "422 Unprocessable Entity", "outcome": operation_outcome(
            [Issue("processing", f"{row.reason} (kept as input {row.input_id})")])}}
    return {"response": {"status": "200 OK", "outcome": _note(
        f"line {row.line}: received before (input {row.input_id}); nothing new stored")}}


def _note(text: str) -> dict[str, Any]:
    return operation_outcome([Issue("informational", text, severity="information")])


ENDPOINTS = EndpointGroup(
    (
        Interaction("POST", "/$ingest", "ingest", ("$ingest",), "system"),
        Interaction("GET", "/OperationDefinition/ingest", "definition", (), "system"),
    ),
    IngestEndpoints,
)
