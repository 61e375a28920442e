"""Resumable index-rebuild jobs (`$reindex`, `fhir-fusion reindex`), the same on every
backend: a store that can rebuild its search index answers `reindex_jobs()` with an
object of the `ReindexJobs` protocol, so the operation (fhir_server/reindex.py) never
asks which store it runs on.

A job covers the resources of one tenant of some types (all when none), in the store's
own order (SQLite's rid, MongoDB's `_id`). `run_batch` rebuilds the next batch and
advances the job's cursor, so a job stopped at any point continues from the last
batch recorded; a `start` with the scope of an unfinished job returns that job. When
the last batch is done, `run_batch` returns the SearchParameter versions the job made
searchable, for the caller to mark in search.custom.REGISTRY.

Implementations: SQLiteReindexJobs below (over fhir_server.storage.sqlite_reindex, one
store transaction per batch), MongoReindexJobs in mongodb_reindex.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from fhir_server.storage.base import Context

if TYPE_CHECKING:
    from fhir_server.storage import sqlite_reindex
    from fhir_server.storage.sqlite import SQLiteStore

RUNNING, COMPLETED = "in-progress", "completed"

# This process, as the runner a job's batches name (stores shared by several API
# workers record it, so that the others know the job is being run).
RUNNER = uuid.uuid4().hex
# A job whose runner recorded a batch this recently counts as running in that process.
LIVE_SECONDS = 30.0

Indexed = list[tuple[str, int]]  # (SearchParameter id, version) made searchable


@dataclass(frozen=True)
class Job:
    id: int
    tenant: str
    types: tuple[str, ...]  # () = every type
    status: str  # in-progress | completed
    cursor: str  # the store's position of the last resource rebuilt, "" before the first
    processed: int
    total: int
    started_at: str
    updated_at: str
    finished_at: str | None
    runner: str = ""  # the process (RUNNER) that ran its last batch, where recorded

    @property
    def shown_total(self) -> int:
        """The total to report beside `processed`: the count taken at start, or more
        when resources created meanwhile fell after the cursor (break-new finding 8);
        what was processed once completed."""
        return self.processed if self.status == COMPLETED else max(self.total, self.processed)

    def running_elsewhere(self, now: datetime | None = None) -> bool:
        """Whether another process (API worker) ran a batch of this unfinished job in
        the last LIVE_SECONDS: it is running there."""
        if self.status == COMPLETED or not self.runner or self.runner == RUNNER:
            return False
        now = now or datetime.now(UTC)
        return (now - datetime.fromisoformat(self.updated_at)).total_seconds() < LIVE_SECONDS


class ReindexJobs(Protocol):
    async def start(self, ctx: Context, types: tuple[str, ...]) -> Job:
        """A new job over ctx.tenant's resources of `types` (sorted; all when empty), or
        the unfinished job with the same scope."""
        ...

    async def get(self, ctx: Context, job_id: int) -> Job | None: ...

    async def unfinished(self, ctx: Context) -> list[Job]:
        """ctx.tenant's jobs that have not completed (to resume at start-up)."""
        ...

    async def run_batch(self, ctx: Context, job: Job, size: int) -> tuple[Job, Indexed]:
        """Rebuild the next `size` resources of `job`; the job as it is after them, and
        when it has completed, the SearchParameter versions now indexed."""
        ...


def jobs_of(store: Any) -> ReindexJobs | None:
    """The store's reindex jobs, None for a store that cannot rebuild its index."""
    factory = getattr(store, "reindex_jobs", None)
    return None if factory is None else factory()  # type: ignore[no-any-return]


def _from_sqlite(job: sqlite_reindex.Job) -> Job:
    return Job(
        job.id, job.tenant, job.types, job.status, str(job.cursor) if job.cursor else "",
        job.processed, job.total, job.started_at, job.updated_at, job.finished_at,
    )  # fmt: skip


class SQLiteReindexJobs:
    """ReindexJobs on the SQLite store: the jobs table of sqlite_reindex, each batch one
    store transaction that also advances the job's cursor."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def start(self, ctx: Context, types: tuple[str, ...]) -> Job:
        from fhir_server.storage import sqlite_reindex

        async with self._store.transaction(ctx) as txn:
            return _from_sqlite(sqlite_reindex.start_job(txn.connection, ctx.tenant, types))

    async def get(self, ctx: Context, job_id: int) -> Job | None:
        from fhir_server.storage import sqlite_reindex

        async with self._store.transaction(ctx) as txn:
            found = sqlite_reindex.get_job(txn.connection, ctx.tenant, job_id)
        return None if found is None else _from_sqlite(found)

    async def unfinished(self, ctx: Context) -> list[Job]:
        from fhir_server.storage import sqlite_reindex

        async with self._store.transaction(ctx) as txn:
            return [_from_sqlite(j) for j in sqlite_reindex.unfinished_jobs(
                txn.connection, ctx.tenant)]  # fmt: skip

    async def run_batch(self, ctx: Context, job: Job, size: int) -> tuple[Job, Indexed]:
        from fhir_server.storage import sqlite_reindex

        async with self._store.transaction(ctx) as txn:
            # the job as committed (its cursor), not as the caller last saw it
            current = sqlite_reindex.get_job(txn.connection, job.tenant, job.id)
            if current is None:
                raise LookupError(f"reindex job {job.id} vanished")
            if current.status == COMPLETED:
                return _from_sqlite(current), []
            updated, indexed = sqlite_reindex.run_batch(txn.connection, current, size)
        return _from_sqlite(updated), indexed


__all__ = [
    "COMPLETED", "LIVE_SECONDS", "RUNNER", "RUNNING", "Job", "ReindexJobs", "SQLiteReindexJobs",
    "jobs_of",
]
