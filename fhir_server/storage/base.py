"""The storage interface every backend implements (SQLite now, MongoDB later).

Entry points (REST, CLI, listeners) reach storage only through this interface.
Every call carries a `Context`: the tenant whose data it touches and the caller
on whose behalf it acts, so tenants and access control can be added without
changing signatures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, AsyncContextManager, Literal, Protocol

from fhir_server import jsonutil

if TYPE_CHECKING:
    from search.query import SearchQuery


@dataclass(frozen=True)
class Context:
    tenant: str = "default"
    caller: str = "anonymous"


@dataclass(frozen=True)
class StoredResource:
    """One version of a resource.

    `body` is its JSON exactly as stored (id and meta filled in), so a read can
    be answered without parsing; `resource` parses it on first use. Both are
    None for the version that records a delete."""

    resource_type: str
    id: str
    version: int
    last_updated: str  # FHIR instant in UTC, e.g. 2026-12-04T16:40:00.123456+00:00
    deleted: bool
    body: bytes | None
    method: Literal["POST", "PUT", "DELETE"] = "PUT"
    # A contained resource found by a search with _contained (search.result): the type
    # and id of the resource it is contained in; `id` is then its local id.
    container: tuple[str, str] | None = None

    @cached_property
    def resource(self) -> dict[str, Any] | None:
        return None if self.body is None else jsonutil.loads(self.body)


WriteOutcome = Literal["created", "updated", "unchanged", "deleted", "not-found"]


@dataclass(frozen=True)
class WriteResult:
    stored: StoredResource | None
    outcome: WriteOutcome


@dataclass(frozen=True)
class SearchPage:
    resources: list[StoredResource]
    total: int | None
    # _include / _revinclude results (search.mode = include), and whether a limit cut them
    included: list[StoredResource] = field(default_factory=list)
    included_truncated: bool = False
    # Keyset paging: pass to SearchQuery.after() for the next page; None on the last page
    next_cursor: str | None = None


@dataclass(frozen=True)
class RawInput:
    """An input as it arrived from a feed (an HL7v2 message, later a DICOM file or CSV),
    kept with what became of it."""

    id: int
    feed: str  # e.g. "hl7v2"
    received_at: str
    content: bytes
    content_hash: str
    status: Literal["stored", "rejected"]
    reason: str | None = None
    result: dict[str, Any] | None = field(default=None)  # e.g. the transaction-response summary


class Transaction(Protocol):
    """Writes that commit together or not at all. Reads inside see the writes before them."""

    async def read(self, resource_type: str, resource_id: str) -> StoredResource | None: ...

    async def search(self, query: SearchQuery) -> SearchPage: ...

    async def create(self, resource: dict[str, Any], resource_id: str | None = None) -> WriteResult:
        """Store a new resource; a fresh id is made when `resource_id` is None."""
        ...

    async def update(self, resource: dict[str, Any], if_match: int | None = None) -> WriteResult:
        """Store a new version of resource["id"], creating it when unknown.

        An update whose content equals the current version writes nothing and
        returns outcome "unchanged" with the current version. A mismatching
        `if_match` raises FHIRError 412."""
        ...

    async def delete(
        self, resource_type: str, resource_id: str, if_match: int | None = None
    ) -> WriteResult: ...

    async def record_input(
        self,
        feed: str,
        content: bytes,
        status: Literal["stored", "rejected"],
        reason: str | None = None,
        result: dict[str, Any] | None = None,
        input_id: int | None = None,
    ) -> int:
        """Keep a raw input with its fate; pass `input_id` to update one kept before."""
        ...

    async def claim(self, resource_type: str, criteria: str) -> None:
        """Claim normalised conditional criteria (operations.criteria_key) before a
        conditional operation that may create: the store keeps one claim per tenant,
        type and criteria (a unique key) and lets no two open transactions hold the
        same claim, so concurrent conditional creates cannot both create."""
        ...

    async def count_feed(self, feed: str, counts: Mapping[str, int]) -> None:
        """Add to the feed's counters (e.g. {"received": 1, "stored": 1}) with this
        transaction, so they stay in step with the inputs it keeps."""
        ...


class ResourceStore(Protocol):
    async def read(self, ctx: Context, resource_type: str, resource_id: str) -> StoredResource | None:
        """The current version, or the delete marker (deleted=True), or None if never stored."""
        ...

    async def vread(
        self, ctx: Context, resource_type: str, resource_id: str, version: int
    ) -> StoredResource | None: ...

    async def history(
        self,
        ctx: Context,
        resource_type: str | None = None,
        resource_id: str | None = None,
        since: str | None = None,
        count: int = 50,
        offset: int = 0,
    ) -> tuple[list[StoredResource], int]:
        """Versions newest first, and how many there are in all."""
        ...

    async def search(self, ctx: Context, query: SearchQuery) -> SearchPage: ...

    def transaction(self, ctx: Context) -> AsyncContextManager[Transaction]: ...

    def batch(self, ctx: Context) -> AsyncContextManager[None]:
        """Group the transactions the current task opens inside into one durable commit.

        Each transaction in the batch still succeeds or fails on its own; none is
        durable before the batch ends. Reads of the task inside see its writes. A
        backend may commit each transaction on its own instead: a batch is a hint."""
        ...

    async def find_input(
        self, ctx: Context, feed: str, content_hash: str, status: str = "stored"
    ) -> RawInput | None:
        """The input with this content hash and status (by default the stored one), if any."""
        ...

    async def get_input(self, ctx: Context, input_id: int) -> RawInput | None: ...

    async def list_inputs(
        self,
        ctx: Context,
        feed: str | None = None,
        status: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[RawInput]:
        """Newest first; `before` (an input id) pages on from the last one seen."""
        ...

    async def feed_counters(self, ctx: Context) -> dict[str, dict[str, int]]:
        """Per feed: the counters added with `Transaction.count_feed`, and "pending",
        the number of inputs rejected and not (yet) settled."""
        ...

    async def close(self) -> None: ...
