"""The durable outbox between the resource store and an external search index, and the
background indexer that drains it.

Every resource write or delete adds an outbox entry in the same database transaction
as the resource (SQLite: table search_outbox, fhir_server.storage.outbox_sqlite;
MongoDB: collection `outbox`, fhir_server.storage.outbox_mongo). So a crash anywhere
between the store's commit and the index's answer loses nothing: the entry is still
there and the indexer takes it up again.

The indexer (`Indexer.drain_once`, looped by `Indexer.run`):

1. claims the due entries, oldest first, a batch at a time (`Outbox.claim`): one
   atomic step gives them an owner token and pushes their due time `lease_seconds`
   ahead, so other indexers on the same outbox skip them while the lease holds;
2. reads each resource's *current* state from the store (its latest version, or the
   delete marker) once per resource, however many entries it has;
3. sends the changes to the index in one bulk request per tenant, each with the
   resource's version: the index keeps the highest version it was given
   (search.fulltext.Change), so redelivery and reordering are harmless;
4. removes the entries the index applied; the others (and all of them when the index
   cannot be reached) stay, with `attempts` + 1 and a due time after an exponential
   backoff (`base_delay` * 2^attempts, capped at `max_delay`). Both steps act only on
   entries the indexer still owns.

Several API workers (and an offline `reindex` beside a SQLite `serve`) may each run an
indexer on the same outbox. The lease keeps them apart: an entry is sent by one
indexer at a time. An indexer killed while holding a lease leaves its entries due
again when the lease runs out, and another takes them over; one that was merely slow
past its lease finds its `done`/`retry_later` refused (the entry now belongs to the
other) and counts it in `lost_leases`. Delivery is thus at least once (twice only
after a lease ran out) and idempotent by (resource, version); per resource it is
ordered because only the current version is ever sent and the index refuses versions
older than the one it holds. Lease times are the workers' own clocks, so a lease must
be much longer than their skew (NTP keeps it to milliseconds; the default is 60 s).

Metrics: `Indexer.metrics()` gives the pending count (entries in the outbox), how
many changes were applied, how many failed attempts were rescheduled, and the last
error's type; the running loop logs them (INFO) every `report_seconds` while anything
is pending, so an index falling behind shows in the server log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from fhir_server.storage.base import Context, ResourceStore
from search.fulltext import Change, FullTextIndex

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
POLL_SECONDS = 0.5
# how long a claimed batch belongs to its indexer: far above a bulk request's time, and
# the delay before a killed worker's entries are taken over
LEASE_SECONDS = 60.0
REPORT_SECONDS = 60.0


@dataclass(frozen=True)
class OutboxEntry:
    key: str  # the backend's id of the entry
    tenant: str
    resource_type: str
    id: str
    version: int
    attempts: int = 0
    owner: str = ""  # the claim's token; done/retry_later act only while it still owns it


class Outbox(Protocol):
    async def claim(self, now: float, limit: int, lease_seconds: float) -> list[OutboxEntry]:
        """Up to `limit` entries whose due time (unix seconds) is not after `now`, in due
        order, leased atomically to a new owner token until `now + lease_seconds`."""
        ...

    async def done(self, entries: Sequence[OutboxEntry]) -> int:
        """Remove the `entries` still owned by their claim; returns how many."""
        ...

    async def retry_later(self, entries: Sequence[OutboxEntry], due: float, error: str) -> int:
        """Keep the `entries` still owned by their claim, with one more attempt and no
        owner, until `due`; returns how many."""
        ...

    async def pending(self) -> int: ...


@dataclass
class IndexerMetrics:
    pending: int
    applied: int
    retried: int
    last_error: str | None
    lost_leases: int = 0


class Indexer:
    """Drains `outbox` into `index`, reading resources from `store`."""

    def __init__(
        self,
        store: ResourceStore,
        outbox: Outbox,
        index: FullTextIndex,
        *,
        batch_size: int = BATCH_SIZE,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._outbox = outbox
        self._index = index
        self._batch_size = batch_size
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._wake = asyncio.Event()
        self.applied = 0
        self.retried = 0
        self.last_error: str | None = None
        # entries whose lease ran out before this indexer finished them (another took over)
        self.lost_leases = 0

    def delay(self, attempts: int) -> float:
        """Seconds before the next try of an entry that has failed `attempts` times."""
        return float(min(self._max_delay, self._base_delay * 2 ** min(attempts, 30)))

    def notify(self) -> None:
        """Wake the loop now (after a write) instead of at the next poll."""
        self._wake.set()

    async def metrics(self) -> IndexerMetrics:
        return IndexerMetrics(
            await self._outbox.pending(), self.applied, self.retried, self.last_error,
            self.lost_leases,
        )

    async def drain_once(self) -> int:
        """One batch: returns how many entries it took (0 when nothing was due)."""
        entries = await self._outbox.claim(self._clock(), self._batch_size, self._lease_seconds)
        if not entries:
            return 0
        try:
            await self._deliver(entries)
        except BaseException:
            # stopped (cancelled at shutdown) or the store failed mid-batch: what is not
            # finished is handed back now rather than when the lease runs out
            await self._release_quietly(entries)
            raise
        return len(entries)

    async def _deliver(self, entries: list[OutboxEntry]) -> None:
        by_resource: dict[tuple[str, str, str], list[OutboxEntry]] = {}
        for entry in entries:
            by_resource.setdefault((entry.tenant, entry.resource_type, entry.id), []).append(entry)
        by_tenant: dict[str, list[tuple[Change, list[OutboxEntry]]]] = {}
        for (tenant, resource_type, resource_id), group in by_resource.items():
            change = await self._current(tenant, resource_type, resource_id)
            if change is None:  # never stored (cannot happen with a transactional outbox)
                await self._finish(group)
                continue
            by_tenant.setdefault(tenant, []).append((change, group))
        for tenant, items in by_tenant.items():
            await self._send(tenant, items)

    async def _release_quietly(self, entries: list[OutboxEntry]) -> None:
        try:
            await self._outbox.release(entries)
        except Exception:  # noqa: BLE001 - the store is down: the lease runs out by itself
            pass

    async def _current(self, tenant: str, resource_type: str, resource_id: str) -> Change | None:
        stored = await self._store.read(
            Context(tenant, caller="search-indexer"), resource_type, resource_id
        )
        if stored is None:
            return None
        resource = None if stored.deleted else stored.resource
        return Change(resource_type, resource_id, stored.version, resource)

    async def _send(self, tenant: str, items: list[tuple[Change, list[OutboxEntry]]]) -> None:
        try:
            results = await self._index.apply(tenant, [change for change, _ in items])
        except Exception as exc:  # noqa: BLE001 - any failure of the index: retry later
            error = type(exc).__name__
            await self._reschedule([e for _, group in items for e in group], error)
            return
        applied = [e for (_, group), r in zip(items, results, strict=True) if r is None
                   for e in group]  # fmt: skip
        await self._finish(applied)
        self.applied += sum(1 for r in results if r is None)
        for (_, group), result in zip(items, results, strict=True):
            if result is not None:
                await self._reschedule(group, result)

    async def _finish(self, entries: list[OutboxEntry]) -> None:
        removed = await self._outbox.done(entries)
        self._count_lost(len(entries) - removed)

    def _count_lost(self, lost: int) -> None:
        if lost:
            self.lost_leases += lost
            logger.warning(
                "search index: %d outbox entries were taken over by another indexer "
                "(lease of %.0f s ran out); they are sent again", lost, self._lease_seconds,
            )

    async def _reschedule(self, entries: list[OutboxEntry], error: str) -> None:
        self.last_error = error
        self.retried += len(entries)
        now = self._clock()
        # entries of one resource move together: the most-tried one sets the delay
        attempts = max(e.attempts for e in entries)
        kept = await self._outbox.retry_later(entries, now + self.delay(attempts), error)
        self._count_lost(len(entries) - kept)
        logger.warning(
            "search index: %d outbox entries not applied (%s); retry in %.0f s",
            len(entries), error, self.delay(attempts),
        )  # fmt: skip

    async def run(
        self, poll_seconds: float = POLL_SECONDS, report_seconds: float = REPORT_SECONDS
    ) -> None:
        """Drain until cancelled. A failure of the store itself (not of the index) is
        logged and retried after a pause; cancelling loses nothing (entries are removed
        only after the index has applied them)."""
        failures = 0
        reported = time.monotonic()
        while True:
            if time.monotonic() - reported >= report_seconds:
                reported = time.monotonic()
                await self._report()
            try:
                taken = await self.drain_once()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a store outage
                failures += 1
                self.last_error = type(exc).__name__
                logger.error("search indexer: %s; retrying", type(exc).__name__)
                await asyncio.sleep(self.delay(failures))
                continue
            if taken < self._batch_size:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), poll_seconds)
                except TimeoutError:
                    pass


    async def _report(self) -> None:
        try:
            metrics = await self.metrics()
        except Exception:  # noqa: BLE001 - the store is down: the loop reports that
            return
        if metrics.pending:
            logger.info(
                "search index: %d changes pending, %d applied, %d retried, last error %s",
                metrics.pending, metrics.applied, metrics.retried, metrics.last_error,
            )  # fmt: skip


async def wait_drained(indexer: Indexer, timeout: float = 30.0) -> None:
    """Drain until the outbox holds nothing due (for `reindex`, tests and shutdown)."""
    deadline = time.monotonic() + timeout
    while await indexer.drain_once():
        if time.monotonic() > deadline:
            raise TimeoutError("the search outbox did not drain in time")
