"""The single-resource write operations, shared by the REST API and Bundle entries.

Each function works inside a store `Transaction`, so a REST request and one entry
of a transaction Bundle go through exactly the same code: validation, conditional
matching (R4 http.html#cond-update, #ccreate, #cdelete), If-Match and the status
that the interaction answers with.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode

from conformance.validation import validate
from fhir_server.errors import FHIRError, gone, invalid, not_found
from fhir_server.local_references import localise
from fhir_server.patch import apply_patch
from fhir_server.storage.base import Context, ResourceStore, SearchPage, StoredResource
from fhir_server.storage.retry import rerun_on_conflict

if TYPE_CHECKING:
    from fhir_server.storage.base import Transaction
    from search.query import SearchQuery

T = TypeVar("T")

# R4 datatypes.html#id
ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ETAG = re.compile(r'^\s*(?:W/)?"?(\d{1,18})"?\s*$')


class Reader(Protocol):
    """What conditional matching and Bundle GET entries need: a Transaction has it,
    and `StoreReader` gives it to a store outside any transaction."""

    async def read(self, resource_type: str, resource_id: str) -> StoredResource | None: ...

    async def search(self, query: SearchQuery) -> SearchPage: ...


class StoreReader:
    """Reads straight from the store (its read connection), outside a transaction."""

    def __init__(self, store: ResourceStore, ctx: Context) -> None:
        self._store = store
        self._ctx = ctx

    async def read(self, resource_type: str, resource_id: str) -> StoredResource | None:
        return await self._store.read(self._ctx, resource_type, resource_id)

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self._store.search(self._ctx, query)


@dataclass(frozen=True)
class OperationResult:
    """What a write did: the HTTP status to answer, the version it leaves (the
    delete marker after a delete, None when nothing existed) and a short note."""

    status: int
    stored: StoredResource | None
    note: str


async def in_transaction(
    store: ResourceStore, ctx: Context, work: Callable[[Transaction], Awaitable[T]]
) -> T:
    """`work(txn)` in a transaction of its own, run again in a new transaction (a new
    snapshot) when the store reports a write conflict it may retry (storage.retry), so
    a REST write answers 409 only when the conflicts persist. `work` must depend on
    nothing but the request: a conditional create that waited for another one with the
    same criteria finds, on the re-run, the resource that one created (200)."""

    async def once() -> T:
        async with store.transaction(ctx) as txn:
            return await work(txn)

    return await rerun_on_conflict(once)


def check_id(resource_id: str, where: str = "id") -> str:
    if not ID_PATTERN.fullmatch(resource_id):
        raise invalid(
            "An id has 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'", where
        )
    return resource_id


def parse_etag(value: str, where: str = "If-Match") -> int:
    """The version number in an ETag such as W/"3" (the quotes and W/ are optional)."""
    match = _ETAG.match(value)
    if match is None:
        raise invalid(f'{where} must be a version ETag such as W/"3"', where)
    return int(match.group(1))


def etag(stored: StoredResource) -> str:
    return f'W/"{stored.version}"'


def require_current(stored: StoredResource | None, resource_type: str, resource_id: str
                    ) -> StoredResource:
    """The readable current version, or the 404 / 410 (R4 http.html#read) a read answers."""
    if stored is None:
        raise not_found(resource_type, resource_id)
    if stored.deleted:
        raise gone(resource_type, resource_id)
    return stored


def parse_criteria(
    resource_type: str, criteria: str, base_url: str = ""
) -> list[tuple[str, str]]:
    """Search parameters of a conditional operation, given either as a query string
    ("identifier=sys|1"), a relative search URL ("Patient?identifier=sys|1") or one on
    this server's base (`base_url`)."""
    text = criteria.strip()
    if base_url and text.startswith(base_url.rstrip("/") + "/"):
        text = text[len(base_url.rstrip("/")) + 1:]
    if "?" in text:
        prefix, text = text.split("?", 1)
        if prefix not in ("", resource_type):
            raise invalid(
                f"Conditional criteria are for {prefix}, not {resource_type}", "criteria"
            )
    params = parse_qsl(text, keep_blank_values=True)
    if not params:
        # Without criteria a conditional operation would match every resource of the type.
        raise invalid("A conditional operation needs search criteria", "criteria")
    return params


# parameters that page or shape a result: they never change which resources match
_NOT_CRITERIA = ("_count", "_offset", "_sort", "_total")


def criteria_key(resource_type: str, params: list[tuple[str, str]]) -> str:
    """Conditional criteria in one normal form: the same criteria written in another
    order or encoding give the same key ("Patient?identifier=sys%7C1")."""
    wanted = sorted((k, v) for k, v in params if k not in _NOT_CRITERIA)
    return f"{resource_type}?{urlencode(wanted)}"


async def claim_criteria(
    txn: Transaction, resource_type: str, params: list[tuple[str, str]]
) -> None:
    """Before a conditional operation that may create (If-None-Exist, conditional update,
    Bundle ifNoneExist), claim its normalised criteria inside the write transaction, so
    two requests with the same criteria cannot both find nothing and both create: the
    store enforces one claim per key (a unique key) until the first one commits."""
    await txn.claim(resource_type, criteria_key(resource_type, params))


async def find_matches(
    reader: Reader, resource_type: str, params: list[tuple[str, str]]
) -> list[StoredResource]:
    """The resources matching conditional criteria; at most two, which is enough to
    tell none, one and several apart. Unknown parameters are errors (strict handling),
    since silently ignoring one would widen the match."""
    from search.query import parse_search

    wanted = [(k, v) for k, v in params if k not in _NOT_CRITERIA]
    query = parse_search(resource_type, [*wanted, ("_count", "2"), ("_total", "none")], strict=True)
    if not query.clauses:
        # e.g. "identifier=" (an empty value is ignored by search): it would match everything
        raise invalid("The conditional criteria select no resource in particular", "criteria")
    page = await reader.search(query)
    return list(page.resources)


def _too_many(what: str) -> FHIRError:
    return FHIRError.simple(
        412, "multiple-matches",
        f"{what} matched more than one resource; the criteria are not selective enough",
    )


# Types whose meaning is a promise the server would have to keep. A Subscription asks
# the server to send notifications; none are sent yet, so storing one would leave it
# "requested" forever while its client waits (R4 subscription.html: a server that
# cannot serve a subscription rejects it).
UNSERVED_TYPES = {"Subscription": "This server does not send Subscription notifications yet"}


def _refuse_unserved(resource_type: str) -> None:
    reason = UNSERVED_TYPES.get(resource_type)
    if reason:
        raise FHIRError.simple(422, "not-supported", reason, resource_type)


def _without_id(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "id"}


async def create(
    txn: Transaction,
    resource: Any,
    resource_type: str,
    *,
    if_none_exist: str | None = None,
    resource_id: str | None = None,
    base_url: str = "",
) -> OperationResult:
    """POST [base]/[type]: the server assigns the id (`resource_id` if given, as a Bundle
    does for urn:uuid entries), ignoring any id in the body.

    With If-None-Exist the resource is validated only when it is going to be stored:
    feeds resend the same Patient with every message, and checking a copy that is
    then thrown away would be most of their cost. `base_url` is this server's base:
    references on it are stored relative (local_references.localise)."""
    if if_none_exist:
        params = parse_criteria(resource_type, if_none_exist, base_url)
        await claim_criteria(txn, resource_type, params)
        matches = await find_matches(txn, resource_type, params)
        if len(matches) > 1:
            raise _too_many("If-None-Exist")
        if matches:
            return OperationResult(200, matches[0], "An existing resource matched If-None-Exist")
    _refuse_unserved(resource_type)
    resource = localise(resource, base_url)
    validate(resource, resource_type)
    result = await txn.create(_without_id(resource), resource_id)
    return OperationResult(201, result.stored, "Created")


async def update(
    txn: Transaction,
    resource: Any,
    resource_type: str,
    resource_id: str,
    *,
    if_match: int | None = None,
    base_url: str = "",
) -> OperationResult:
    """PUT [base]/[type]/[id]; creates the resource when the id is unknown (update as create)."""
    resource = localise(resource, base_url)
    validate(resource, resource_type)
    return await _update_valid(txn, resource, resource_type, resource_id, if_match=if_match)


async def _update_valid(
    txn: Transaction,
    resource: Any,
    resource_type: str,
    resource_id: str,
    *,
    if_match: int | None = None,
) -> OperationResult:
    """`update` for a resource that has already been validated."""
    _refuse_unserved(resource_type)
    check_id(resource_id)
    body_id = resource.get("id")
    if body_id is None:
        raise invalid("The resource needs an id equal to the one in the URL", f"{resource_type}.id")
    if body_id != resource_id:
        raise invalid(
            f"The resource id {body_id} does not match {resource_id} in the URL",
            f"{resource_type}.id",
        )
    result = await txn.update(resource, if_match)
    if result.outcome == "created":
        return OperationResult(201, result.stored, "Created")
    if result.outcome == "unchanged":
        return OperationResult(200, result.stored, "Unchanged: same content as the current version")
    return OperationResult(200, result.stored, "Updated")


async def conditional_update(
    txn: Transaction,
    resource: Any,
    resource_type: str,
    criteria: str,
    *,
    if_match: int | None = None,
    base_url: str = "",
) -> OperationResult:
    """PUT [base]/[type]?criteria: no match creates, one match updates it, several are 412."""
    resource = localise(resource, base_url)
    validate(resource, resource_type)
    params = parse_criteria(resource_type, criteria)
    await claim_criteria(txn, resource_type, params)
    matches = await find_matches(txn, resource_type, params)
    if len(matches) > 1:
        raise _too_many("The conditional update")
    if not matches:
        body_id = resource.get("id")
        if body_id is None:
            result = await txn.create(resource)
            return OperationResult(201, result.stored, "Created")
        return await _update_valid(
            txn, resource, resource_type, check_id(body_id, f"{resource_type}.id"),
            if_match=if_match,
        )
    match_id = matches[0].id
    if resource.get("id", match_id) != match_id:
        raise invalid(
            f"The resource id does not match {resource_type}/{match_id} found by the criteria",
            f"{resource_type}.id",
        )
    return await _update_valid(
        txn, {**resource, "id": match_id}, resource_type, match_id, if_match=if_match
    )


async def patch(
    txn: Transaction,
    resource_type: str,
    resource_id: str,
    operations: Any,
    *,
    if_match: int | None = None,
    base_url: str = "",
) -> OperationResult:
    """PATCH [base]/[type]/[id] with a JSON Patch; the result is validated and stored as
    an update of the version the patch was applied to."""
    check_id(resource_id)
    current = require_current(
        await txn.read(resource_type, resource_id), resource_type, resource_id
    )
    if if_match is not None and if_match != current.version:
        raise FHIRError.simple(
            412, "conflict",
            f"{resource_type}/{resource_id} is at version {current.version}, not {if_match}",
        )
    assert current.resource is not None
    patched = apply_patch(current.resource, operations)
    if patched.get("resourceType") != resource_type or patched.get("id") != resource_id:
        raise FHIRError.simple(
            422, "processing", "A patch cannot change the resourceType or the id"
        )
    return await update(
        txn, patched, resource_type, resource_id, if_match=current.version, base_url=base_url
    )


async def delete(
    txn: Transaction, resource_type: str, resource_id: str, *, if_match: int | None = None
) -> OperationResult:
    """DELETE [base]/[type]/[id]. Deleting an unknown or already deleted resource
    succeeds and changes nothing (R4 http.html#delete allows 200/204 for both)."""
    check_id(resource_id)
    result = await txn.delete(resource_type, resource_id, if_match)
    if result.outcome == "not-found":
        return OperationResult(204, None, "Nothing to delete: the resource does not exist")
    if result.outcome == "unchanged":
        return OperationResult(204, result.stored, "The resource was already deleted")
    return OperationResult(204, result.stored, "Deleted")


async def conditional_delete(
    txn: Transaction, resource_type: str, criteria: str, *, if_match: int | None = None
) -> OperationResult:
    """DELETE [base]/[type]?criteria: one match is deleted, none deletes nothing, several
    are 412 (the server supports conditionalDelete "single")."""
    matches = await find_matches(txn, resource_type, parse_criteria(resource_type, criteria))
    if len(matches) > 1:
        raise _too_many("The conditional delete")
    if not matches:
        return OperationResult(204, None, "Nothing to delete: no resource matched the criteria")
    return await delete(txn, resource_type, matches[0].id, if_match=if_match)
