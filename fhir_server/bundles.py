"""Batch and transaction Bundles (R4 http.html#transaction).

A transaction runs in one store transaction: every entry succeeds or nothing is
written, and the first failing entry is reported as a FHIRError whose issues name
the entry ("Bundle.entry[2].resource.birthDate"). Entries are processed in the
order the spec prescribes (DELETE, POST, PUT/PATCH, GET/HEAD), and before any write
each urn:uuid / urn:oid fullUrl is given the id the server assigns, so references
to it anywhere in the resources can be rewritten; conditional references
("Patient?identifier=sys|1") are resolved by search.

A batch processes each entry on its own (each write in a store transaction of its
own, in entry order) and reports each entry's success or OperationOutcome.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from conformance.definitions import RESOURCE_TYPES
from fhir_server import jsonutil, operations, views
from fhir_server.errors import FHIRError, Issue, invalid
from fhir_server.operations import OperationResult, Reader, StoreReader, in_transaction
from fhir_server.storage.base import Context, ResourceStore, StoredResource
from fhir_server.storage.retry import rerun_on_conflict

if TYPE_CHECKING:
    from fhir_server.storage.base import Transaction

BeforeCommit = Callable[["Transaction"], Awaitable[None]]

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# R4 http.html#trules: DELETE, then POST, then PUT/PATCH, then GET/HEAD
_RANK = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_LOCAL_URN = ("urn:uuid:", "urn:oid:")


@dataclass
class _Entry:
    index: int
    method: str
    segments: list[str]
    query: str
    resource: dict[str, Any] | None
    full_url: str | None
    if_none_exist: str | None
    if_match: int | None
    planned_id: str | None = None  # in a transaction: the id a POST or conditional PUT gets
    # in a transaction: the resource its conditional criteria matched when ids were
    # planned, so that running the entry does not search again
    planned_match: StoredResource | None = None
    # in a transaction: ifNoneExist was searched when ids were planned and matched nothing
    planned_absent: bool = False
    rewritten: dict[str, Any] | None = field(default=None)

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"

    @property
    def resource_type(self) -> str:
        return self.segments[0] if self.segments else ""


async def process_bundle(
    store: ResourceStore,
    ctx: Context,
    bundle: Any,
    *,
    base_url: str = "",
    before_commit: BeforeCommit | None = None,
    prefer: str = "minimal",
) -> dict[str, Any]:
    """Process a batch or transaction Bundle and return the -response Bundle.

    `base_url` is the server base (for fullUrls and to accept absolute request URLs).
    `before_commit(txn)` runs inside a transaction right before it commits; for a
    batch it runs in a transaction of its own after the entries. `prefer` is the
    Prefer return value: "minimal" (default), "representation" or "OperationOutcome".
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise invalid("The body must be a Bundle resource", "Bundle")
    kind = bundle.get("type")
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise FHIRError.simple(400, "structure", "Bundle.entry must be a list", "Bundle.entry")
    base_url = base_url.rstrip("/")
    if kind == "transaction":
        return await _transaction(store, ctx, raw_entries, base_url, before_commit, prefer)
    if kind == "batch":
        return await _batch(store, ctx, raw_entries, base_url, before_commit, prefer)
    raise invalid(
        "Bundle.type must be transaction or batch to be processed", "Bundle.type"
    )


# -- entry parsing -----------------------------------------------------------------------


def _parse_entry(index: int, raw: Any, base_url: str) -> _Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise FHIRError.simple(400, "structure", "An entry must be a JSON object", where)
    request = raw.get("request")
    if not isinstance(request, dict):
        raise FHIRError.simple(
            400, "required", "Every entry of a batch or transaction needs a request",
            f"{where}.request",
        )
    method = request.get("method")
    if method not in _METHODS:
        raise FHIRError.simple(
            400, "value", "request.method must be one of " + ", ".join(_METHODS),
            f"{where}.request.method",
        )
    url = request.get("url")
    if not isinstance(url, str) or not url.strip():
        raise FHIRError.simple(400, "required", "request.url is missing", f"{where}.request.url")
    url = url.strip()
    if base_url and url.startswith(base_url + "/"):
        url = url[len(base_url) + 1:]
    path, _, query = url.partition("?")
    segments = [s for s in path.split("/") if s]
    if segments and segments[0] != "_history" and segments[0] not in RESOURCE_TYPES:
        raise FHIRError.simple(
            400, "not-supported", "request.url names an unknown resource type",
            f"{where}.request.url",
        )

    resource = raw.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise FHIRError.simple(
            400, "required", f"A {method} entry needs a resource", f"{where}.resource"
        )
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise FHIRError.simple(400, "value", "fullUrl must be a string", f"{where}.fullUrl")
    if_none_exist = request.get("ifNoneExist")
    if if_none_exist is not None and not isinstance(if_none_exist, str):
        raise FHIRError.simple(
            400, "value", "ifNoneExist must be a string", f"{where}.request.ifNoneExist"
        )
    if_match = request.get("ifMatch")
    if if_match is not None:
        if not isinstance(if_match, str):
            raise FHIRError.simple(
                400, "value", "ifMatch must be a string", f"{where}.request.ifMatch"
            )
        if_match_version: int | None = operations.parse_etag(if_match, f"{where}.request.ifMatch")
    else:
        if_match_version = None

    entry = _Entry(index, method, segments, query, resource, full_url, if_none_exist,
                   if_match_version)
    _check_shape(entry)
    return entry


def _check_shape(entry: _Entry) -> None:
    """The request URL forms each method accepts (R4 http.html#transaction)."""
    n, method = len(entry.segments), entry.method
    if method == "POST":
        ok = n == 1 and not entry.query
    elif method in ("PUT", "DELETE", "PATCH"):
        ok = (n == 2 and not entry.query) or (n == 1 and bool(entry.query))
    else:  # GET/HEAD: [type], [type]/[id], _history forms and [type]/[id]/_history/[vid]
        ok = n in (1, 2) or (n in (3, 4) and entry.segments[2] == "_history")
    if method != "GET" and method != "HEAD" and entry.segments[:1] == ["_history"]:
        ok = False
    if not ok:
        raise FHIRError.simple(
            400, "value", f"request.url is not a valid URL for {method}",
            f"{entry.where}.request.url",
        )
    if n >= 2 and entry.segments[0] != "_history" and entry.segments[1] != "_history":
        operations.check_id(entry.segments[1], f"{entry.where}.request.url")


# -- errors ------------------------------------------------------------------------------


def _locate(exc: FHIRError, entry_index: int, resource_type: str) -> FHIRError:
    """The same error with each issue pointing into entry `entry_index` of the Bundle."""
    prefix = f"Bundle.entry[{entry_index}]"
    issues: list[Issue] = []
    for issue in exc.issues:
        expressions = tuple(_locate_expression(e, prefix, resource_type) for e in issue.expression)
        diagnostics = issue.diagnostics
        if not diagnostics.startswith(prefix):
            diagnostics = f"{prefix}: {diagnostics}"
        issues.append(replace(issue, expression=expressions or (prefix,), diagnostics=diagnostics))
    return type(exc)(exc.status, issues)  # a RetryableConflict stays one (storage.retry)


def _locate_expression(expression: str, prefix: str, resource_type: str) -> str:
    if expression.startswith("Bundle.entry["):
        return expression
    if resource_type and (
        expression == resource_type or expression.startswith((resource_type + ".",
                                                              resource_type + "["))
    ):
        return f"{prefix}.resource{expression[len(resource_type):]}"
    if expression == "resourceType":
        return f"{prefix}.resource.resourceType"
    return f"{prefix}.request"


def _error_entry(exc: FHIRError) -> dict[str, Any]:
    return {"response": {"status": views.status_line(exc.status), "outcome": exc.outcome()}}


# -- references --------------------------------------------------------------------------


def _references(value: Any, found: set[str]) -> None:
    """Collect every `reference` string anywhere in a resource."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                found.add(item)
            elif isinstance(item, (dict, list)):
                _references(item, found)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                _references(item, found)


def _rewrite(value: Any, mapping: dict[str, str]) -> Any:
    """A copy of `value` with each `reference` found in `mapping` replaced."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item in mapping:
                out[key] = mapping[item]
            elif isinstance(item, (dict, list)):
                out[key] = _rewrite(item, mapping)
            else:
                out[key] = item
        return out
    if isinstance(value, list):
        return [_rewrite(item, mapping) if isinstance(item, (dict, list)) else item
                for item in value]
    return value


def _is_conditional_reference(reference: str) -> bool:
    head, sep, _ = reference.partition("?")
    return bool(sep) and head in RESOURCE_TYPES


def _criteria_key(resource_type: str, criteria: str) -> str:
    params = sorted(parse_qsl(criteria.partition("?")[2] if "?" in criteria else criteria,
                              keep_blank_values=True))
    return f"{resource_type}?" + "&".join(f"{k}={v}" for k, v in params)


async def _resolve_conditional(reader: Reader, reference: str) -> str:
    """R4 http.html#trules: a conditional reference must match exactly one resource."""
    resource_type, _, criteria = reference.partition("?")
    params = operations.parse_criteria(resource_type, criteria)
    matches = await operations.find_matches(reader, resource_type, params)
    if not matches:
        raise FHIRError.simple(
            400, "not-found", f"A conditional reference to {resource_type} matches no resource"
        )
    if len(matches) > 1:
        raise FHIRError.simple(
            412, "multiple-matches",
            f"A conditional reference to {resource_type} matches more than one resource",
        )
    return f"{resource_type}/{matches[0].id}"


async def _resolve_references(
    entry: _Entry, reader: Reader, mapping: dict[str, str], strict_local: bool
) -> None:
    """Rewrite the entry's resource: local fullUrls to their ids, conditional
    references to the one resource they match. Adds what it resolves to `mapping`."""
    if entry.resource is None:
        return
    found: set[str] = set()
    _references(entry.resource, found)
    for reference in sorted(found):
        if reference in mapping:
            continue
        if _is_conditional_reference(reference):
            key = _criteria_key(*reference.split("?", 1))
            if key in mapping:
                mapping[reference] = mapping[key]
            else:
                mapping[reference] = await _resolve_conditional(reader, reference)
        elif reference.startswith(_LOCAL_URN):
            # R4 http.html#brules: batch entries are independent, so a batch cannot
            # resolve one entry's fullUrl in another; only a transaction does
            text = ("A reference names a urn fullUrl of no entry in this Bundle" if strict_local
                    else "A batch entry cannot refer to a urn fullUrl (batch entries are "
                    "independent, R4 http.html#brules); send a transaction instead")
            raise FHIRError.simple(400, "not-found", text, f"{entry.resource_type}")
    entry.rewritten = _rewrite(entry.resource, mapping) if found else entry.resource


# -- transaction -------------------------------------------------------------------------


async def _transaction(
    store: ResourceStore,
    ctx: Context,
    raw_entries: list[Any],
    base_url: str,
    before_commit: BeforeCommit | None,
    prefer: str,
) -> dict[str, Any]:
    """The whole Bundle in one store transaction, run again from its raw entries (a new
    transaction, a new snapshot) when it loses a write conflict (storage.retry): e.g. an
    ifNoneExist entry that waited for a concurrent create with the same criteria finds
    that resource on the re-run instead of answering 409."""
    return await rerun_on_conflict(
        lambda: _transaction_once(store, ctx, raw_entries, base_url, before_commit, prefer)
    )


async def _transaction_once(
    store: ResourceStore,
    ctx: Context,
    raw_entries: list[Any],
    base_url: str,
    before_commit: BeforeCommit | None,
    prefer: str,
) -> dict[str, Any]:
    entries: list[_Entry] = []
    for index, raw in enumerate(raw_entries):
        try:
            entries.append(_parse_entry(index, raw, base_url))
        except FHIRError as exc:
            raise _locate(exc, index, "") from None
    ordered = sorted(entries, key=lambda e: (_RANK[e.method], e.index))
    responses: list[dict[str, Any]] = [{} for _ in entries]

    async with store.transaction(ctx) as txn:
        await _claim_first(txn, entries)
        current: _Entry | None = None
        try:
            for current in ordered:
                if current.method == "DELETE":
                    responses[current.index] = await _write(txn, current, base_url, prefer)
            current = None  # _plan_ids names the entry in its own errors
            mapping = await _plan_ids(txn, entries, base_url)
            _check_one_action_per_resource(entries)
            for current in entries:
                if current.method in ("POST", "PUT"):
                    await _resolve_references(current, txn, mapping, strict_local=True)
            for current in ordered:
                if current.method != "DELETE":
                    responses[current.index] = await _run(
                        store, ctx, txn, current, base_url, prefer
                    )
            current = None
        except FHIRError as exc:
            if current is None:
                raise
            raise _locate(exc, current.index, current.resource_type) from None
        if before_commit is not None:
            await before_commit(txn)
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}


async def _claim_first(txn: Transaction, entries: list[_Entry]) -> None:
    """Claim the criteria of every conditional create and conditional update first,
    before the transaction reads or writes anything, in one order (that of the claim
    keys): its snapshot then starts after any concurrent request on the same criteria
    committed, and two Bundles claiming the same criteria never wait on each other in
    a cycle. Planning claims them again, which changes nothing."""
    wanted: dict[str, tuple[_Entry, str, list[tuple[str, str]]]] = {}
    for entry in entries:
        criteria = (
            entry.if_none_exist if entry.method == "POST"
            else entry.query if entry.method == "PUT" and len(entry.segments) == 1
            else None
        )
        if not criteria:
            continue
        try:
            params = operations.parse_criteria(entry.resource_type, criteria)
        except FHIRError:
            continue  # planning reports it, located in its entry
        key = f"{entry.resource_type}|{operations.criteria_key(entry.resource_type, params)}"
        wanted.setdefault(key, (entry, entry.resource_type, params))
    for key in sorted(wanted):
        entry, resource_type, params = wanted[key]
        try:
            await operations.claim_criteria(txn, resource_type, params)
        except FHIRError as exc:
            raise _locate(exc, entry.index, resource_type) from None


async def _plan_ids(txn: Transaction, entries: list[_Entry], base_url: str) -> dict[str, str]:
    """Give every POST its id before anything is created, so that entries can refer
    to each other in any order; map each fullUrl (and each conditional-create
    criteria) to the "Type/id" it will have."""
    mapping: dict[str, str] = {}
    for entry in entries:
        if entry.method not in ("POST", "PUT"):
            continue
        resource_type = entry.resource_type
        target: str | None = None
        try:
            if entry.method == "POST":
                target = await _plan_create(txn, entry, mapping)
            elif len(entry.segments) == 2:
                target = f"{resource_type}/{entry.segments[1]}"
            else:
                target = await _plan_conditional_update(txn, entry, mapping)
        except FHIRError as exc:
            raise _locate(exc, entry.index, resource_type) from None
        if entry.full_url:
            mapping[entry.full_url] = target
            if base_url and entry.full_url.startswith(base_url + "/"):
                mapping[entry.full_url[len(base_url) + 1:]] = target
    return mapping


def _check_one_action_per_resource(entries: list[_Entry]) -> None:
    """R4 http.html#trules: if the resource identities of the DELETE, POST and PUT/PATCH
    entries (conditional ones as resolved) overlap, the transaction fails; so do entries
    sharing a fullUrl (bdl-7). Run after `_plan_ids`, which resolved the conditional
    targets. Issues name entries and types only: ids found by criteria may be MRNs."""
    by_target: dict[str, list[_Entry]] = {}
    by_full_url: dict[str, list[_Entry]] = {}
    for entry in entries:
        if entry.full_url:
            by_full_url.setdefault(entry.full_url, []).append(entry)
        target = _target(entry)
        if target is not None:
            by_target.setdefault(target, []).append(entry)
    issues = [
        Issue("business-rule",
              f"Entries {_entry_list(group)} act on the same {group[0].resource_type}; a "
              "transaction may act on a resource only once (R4 http.html#trules)",
              expression=tuple(e.where for e in group))
        for group in by_target.values() if len(group) > 1
    ]
    issues += [
        Issue("business-rule",
              f"Entries {_entry_list(group)} have the same fullUrl; fullUrl must be unique "
              "in a Bundle (bdl-7)",
              expression=tuple(f"{e.where}.fullUrl" for e in group))
        for group in by_full_url.values() if len(group) > 1
    ]
    if issues:
        raise FHIRError(400, issues)


def _target(entry: _Entry) -> str | None:
    """The resource a write entry acts on, as Type/id, or as its normalised criteria
    while a conditional DELETE/PATCH is not resolved yet; None for reads."""
    if entry.method in ("GET", "HEAD"):
        return None
    if len(entry.segments) == 2:
        return "/".join(entry.segments)
    if entry.method in ("POST", "PUT") and entry.planned_id:
        return f"{entry.resource_type}/{entry.planned_id}"
    return _criteria_key(entry.resource_type, entry.query)


def _entry_list(group: list[_Entry]) -> str:
    numbers = [str(e.index) for e in group]
    return ", ".join(numbers[:-1]) + " and " + numbers[-1]


async def _plan_create(txn: Transaction, entry: _Entry, mapping: dict[str, str]) -> str:
    resource_type = entry.resource_type
    if entry.if_none_exist:
        key = _criteria_key(resource_type, entry.if_none_exist)
        if key in mapping:  # an earlier entry of this Bundle creates the same resource
            entry.planned_id = mapping[key].split("/", 1)[1]
            return mapping[key]
        params = operations.parse_criteria(resource_type, entry.if_none_exist)
        await operations.claim_criteria(txn, resource_type, params)
        matches = await operations.find_matches(txn, resource_type, params)
        if len(matches) > 1:
            raise FHIRError.simple(
                412, "multiple-matches", "ifNoneExist matched more than one resource",
            )
        entry.planned_match = matches[0] if matches else None
        entry.planned_absent = not matches
        entry.planned_id = matches[0].id if matches else str(uuid.uuid4())
        mapping[key] = f"{resource_type}/{entry.planned_id}"
        return mapping[key]
    entry.planned_id = str(uuid.uuid4())
    return f"{resource_type}/{entry.planned_id}"


async def _plan_conditional_update(
    txn: Transaction, entry: _Entry, mapping: dict[str, str]
) -> str:
    resource_type = entry.resource_type
    assert entry.resource is not None
    params = operations.parse_criteria(resource_type, entry.query)
    await operations.claim_criteria(txn, resource_type, params)
    matches = await operations.find_matches(txn, resource_type, params)
    if len(matches) > 1:
        raise FHIRError.simple(
            412, "multiple-matches",
            "The conditional update matched more than one resource; "
            "the criteria are not selective enough",
        )
    if matches:
        target_id = matches[0].id
        entry.planned_match = matches[0]
        if entry.resource.get("id", target_id) != target_id:
            raise invalid(
                f"The resource id does not match {resource_type}/{target_id} "
                "found by the criteria",
                f"{resource_type}.id",
            )
    elif isinstance(entry.resource.get("id"), str):
        target_id = entry.resource["id"]
    else:
        # no match: it will be created, under an id chosen now so references can name it
        target_id = str(uuid.uuid4())
        entry.resource = {**entry.resource, "id": target_id}
    entry.planned_id = target_id
    target = f"{resource_type}/{target_id}"
    mapping[_criteria_key(resource_type, entry.query)] = target
    return target


# -- running entries ---------------------------------------------------------------------


async def _run(
    store: ResourceStore,
    ctx: Context,
    txn: Transaction | None,
    entry: _Entry,
    base_url: str,
    prefer: str,
) -> dict[str, Any]:
    if entry.method in ("GET", "HEAD"):
        reader: Reader = txn if txn is not None else StoreReader(store, ctx)
        return await _get(store, ctx, reader, entry, base_url)
    if txn is None:  # a batch entry: its own transaction, re-run on a write conflict
        return await in_transaction(
            store, ctx, lambda own: _write(own, entry, base_url, prefer)
        )
    return await _write(txn, entry, base_url, prefer)


async def _write(txn: Transaction, entry: _Entry, base_url: str, prefer: str) -> dict[str, Any]:
    resource_type, method = entry.resource_type, entry.method
    resource = entry.rewritten if entry.rewritten is not None else entry.resource
    conditional = len(entry.segments) == 1
    if method == "POST" and entry.planned_match is not None:
        # the ifNoneExist criteria matched when ids were planned in this transaction
        result = OperationResult(
            200, entry.planned_match, "An existing resource matched ifNoneExist"
        )
    elif method == "POST":
        result = await operations.create(
            txn, resource, resource_type,
            if_none_exist=None if entry.planned_absent else entry.if_none_exist,
            resource_id=entry.planned_id, base_url=base_url,
        )
        if entry.planned_id and result.stored and result.stored.id != entry.planned_id:
            raise FHIRError.simple(
                409, "conflict",
                "Another entry of this Bundle created the resource ifNoneExist looks for",
            )
    elif method == "PUT":
        assert resource is not None
        if conditional and entry.planned_id:
            # the criteria were resolved to this id when ids were planned
            result = await operations.update(
                txn, {**resource, "id": entry.planned_id}, resource_type, entry.planned_id,
                if_match=entry.if_match, base_url=base_url,
            )
        elif conditional:
            result = await operations.conditional_update(
                txn, resource, resource_type, entry.query, if_match=entry.if_match,
                base_url=base_url,
            )
        else:
            result = await operations.update(
                txn, resource, resource_type, entry.segments[1], if_match=entry.if_match,
                base_url=base_url,
            )
    elif method == "DELETE":
        if conditional:
            result = await operations.conditional_delete(
                txn, resource_type, entry.query, if_match=entry.if_match
            )
        else:
            result = await operations.delete(
                txn, resource_type, entry.segments[1], if_match=entry.if_match
            )
    else:
        if conditional:
            raise FHIRError.simple(
                400, "not-supported", "Conditional patch is not supported", "request.url"
            )
        result = await operations.patch(
            txn, resource_type, entry.segments[1], _patch_document(entry.resource),
            if_match=entry.if_match, base_url=base_url,
        )
    return _write_response(result, base_url, prefer)


def _patch_document(resource: dict[str, Any] | None) -> Any:
    """The JSON Patch of a Bundle PATCH entry: a Binary with contentType
    application/json-patch+json and the patch, base64 encoded, in data."""
    if (
        not isinstance(resource, dict)
        or resource.get("resourceType") != "Binary"
        or resource.get("contentType") != "application/json-patch+json"
        or not isinstance(resource.get("data"), str)
    ):
        raise FHIRError.simple(
            400, "not-supported",
            "A PATCH entry needs a Binary with contentType application/json-patch+json",
            "request.method",
        )
    try:
        return jsonutil.loads(base64.b64decode(resource["data"], validate=True))
    except (ValueError, RecursionError):
        raise FHIRError.simple(
            400, "structure", "The Binary data is not a base64-encoded JSON Patch",
            "request.method",
        ) from None


def _write_response(result: OperationResult, base_url: str, prefer: str) -> dict[str, Any]:
    response: dict[str, Any] = {"status": views.status_line(result.status)}
    entry: dict[str, Any] = {}
    stored = result.stored
    if stored is not None:
        if not stored.deleted:
            entry["fullUrl"] = views.full_url(base_url, stored)
            response["location"] = views.location(stored)
        response["etag"] = operations.etag(stored)
        response["lastModified"] = stored.last_updated
        if prefer == "representation" and not stored.deleted:
            entry["resource"] = stored.resource
    if prefer == "OperationOutcome":
        response["outcome"] = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational",
                       "diagnostics": result.note}],
        }
    entry["response"] = response
    return entry


async def _get(
    store: ResourceStore, ctx: Context, reader: Reader, entry: _Entry, base_url: str
) -> dict[str, Any]:
    """GET/HEAD entries: read, vread, search and history."""
    from search.query import parse_search

    segments, n = entry.segments, len(entry.segments)
    params = parse_qsl(entry.query, keep_blank_values=True)
    resource: Any
    stored: StoredResource | None = None
    if segments[-1:] == ["_history"]:
        count, offset = views.history_paging(params)
        resource_type = segments[0] if n >= 2 else None
        resource_id = segments[1] if n == 3 else None
        since = dict(params).get("_since")
        versions, total = await store.history(
            ctx, resource_type, resource_id, since=since, count=count, offset=offset
        )
        path = "/".join(segments)
        resource = views.history(versions, total, base_url, path, params, count, offset)
    elif n == 1:
        query = parse_search(segments[0], params)
        page = await reader.search(query)
        resource = views.searchset(page, query, base_url, segments[0])
    elif n == 2:
        stored = operations.require_current(
            await reader.read(segments[0], segments[1]), segments[0], segments[1]
        )
        resource = stored.resource
    else:
        version = _version_number(segments[3])
        found = await store.vread(ctx, segments[0], segments[1], version)
        if found is None:
            raise FHIRError.simple(404, "not-found", "That version is not known")
        if found.deleted:
            raise FHIRError.simple(410, "deleted", "That version records a delete")
        stored, resource = found, found.resource

    response: dict[str, Any] = {"status": "200 OK"}
    if stored is not None:
        response["etag"] = operations.etag(stored)
        response["lastModified"] = stored.last_updated
    out: dict[str, Any] = {}
    if entry.method == "GET":
        out["resource"] = resource
    out["response"] = response
    return out


def _version_number(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise FHIRError.simple(404, "not-found", "A version id is a positive whole number")
    return int(text)


# -- batch -------------------------------------------------------------------------------


async def _batch(
    store: ResourceStore,
    ctx: Context,
    raw_entries: list[Any],
    base_url: str,
    before_commit: BeforeCommit | None,
    prefer: str,
) -> dict[str, Any]:
    responses: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_entries):
        try:
            entry = _parse_entry(index, raw, base_url)
            if entry.method in ("POST", "PUT"):
                await _resolve_references(entry, StoreReader(store, ctx), {}, strict_local=False)
            responses.append(await _run(store, ctx, None, entry, base_url, prefer))
        except FHIRError as exc:
            responses.append(_error_entry(exc))
    if before_commit is not None:
        async with store.transaction(ctx) as txn:
            await before_commit(txn)
    return {"resourceType": "Bundle", "type": "batch-response", "entry": responses}


__all__ = ["BeforeCommit", "process_bundle"]
