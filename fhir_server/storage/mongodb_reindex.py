"""Rebuilding the search index entries of the MongoDB store (`$reindex`, `fhir-fusion
reindex`), so that a custom SearchParameter stored after the resources it applies to
finds them too: the ReindexJobs of fhir_server/storage/reindex_jobs.py.

A job (collection `reindex_jobs`, one document per job, with its tenant) goes through
the resource documents of its tenant and types in `_id` order, a batch at a time,
recomputing each one's `idx` from its body (mongodb_search.index_entries; a delete
marker's is emptied), outside any transaction, so it runs on a standalone server too and
never holds a transaction open for long. Each update names the version it read, so a
resource written meanwhile (whose writer computed its entries with the parameter
already defined) is left as it is. After a batch the job document's cursor (the last
`_id`) and count advance in one compare-and-set on the cursor the batch started from:
a job killed between the two redoes that batch (harmless), and two workers running the
same job never count a batch twice. Each batch also records its runner (the process,
reindex_jobs.RUNNER), so that other API workers show the job as running while its
batches keep coming and do not start it again. While a job runs its document carries
`active: "<tenant>|<types>"`, unique, so that concurrent starts with one scope get one
job.

When a job has gone through every resource of its scope, the SearchParameter versions
that were pending when it started (and are still current) are recorded as indexed
(collection search_param_state, read again at start-up) and become searchable.

As in SQLite, the parameter registry is one per process and a parameter counts as
indexed once the run for one tenant has finished.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from fhir_server import jsonutil
from fhir_server.storage import mongodb_documents as docs
from fhir_server.storage import mongodb_search
from fhir_server.storage.base import Context
from fhir_server.storage.reindex_jobs import COMPLETED, RUNNER, RUNNING, Indexed, Job
from search import custom

STATE = "search_param_state"  # {_id: SearchParameter id, version: the version indexed}
JOBS = "reindex_jobs"
BATCH = 500

Progress = Callable[[int, int], None]


async def indexed_versions(db: Any) -> dict[str, int]:
    """The version of each SearchParameter whose reindex has finished."""
    found = db[STATE].find({}, {"version": 1})
    return {doc["_id"]: int(doc["version"]) for doc in await found.to_list(None)}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _job(doc: dict[str, Any]) -> Job:
    cursor = doc.get("cursor")
    return Job(
        int(doc["_id"]), doc["tenant"], tuple(t for t in doc["types"].split(",") if t),
        doc["status"], "" if cursor is None else str(cursor), int(doc["processed"]),
        int(doc["total"]), doc["started_at"], doc["updated_at"], doc.get("finished_at"),
        doc.get("runner") or "",
    )  # fmt: skip


def _scope(tenant: str, types: tuple[str, ...]) -> dict[str, Any]:
    where: dict[str, Any] = {"tenant": tenant}
    if types:
        where["type"] = types[0] if len(types) == 1 else {"$in": list(types)}
    return where


class MongoReindexJobs:
    """ReindexJobs on a MongoDB database (the store's `db`)."""

    def __init__(self, db: Any) -> None:
        self._db = db

    @property
    def _jobs(self) -> Any:
        return self._db[JOBS]

    async def start(self, ctx: Context, types: tuple[str, ...]) -> Job:
        key = ",".join(sorted(types))
        active = f"{ctx.tenant}|{key}"
        await self._jobs.create_index(
            [("active", ASCENDING)], unique=True, sparse=True, name="one_running_per_scope"
        )
        found = await self._jobs.find_one({"active": active})
        if found is not None:
            return _job(found)
        total = await self._db[docs.RESOURCES].count_documents(_scope(ctx.tenant, types))
        # the SearchParameter versions this job makes searchable once it completes
        pending = [[p.resource_id, p.version] for p in custom.REGISTRY.pending(types or None)]
        counter = await self._db[docs.COUNTERS].find_one_and_update(
            {"_id": JOBS}, {"$inc": {"n": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        now = _now()
        doc = {
            "_id": int(counter["n"]), "tenant": ctx.tenant, "types": key, "status": RUNNING,
            "cursor": None, "processed": 0, "total": total, "params": pending,
            "started_at": now, "updated_at": now, "finished_at": None, "active": active,
        }  # fmt: skip
        try:
            await self._jobs.insert_one(doc)
        except DuplicateKeyError:  # another request started the same scope just now
            found = await self._jobs.find_one({"active": active})
            if found is not None:
                return _job(found)
            raise
        return _job(doc)

    async def get(self, ctx: Context, job_id: int) -> Job | None:
        found = await self._jobs.find_one({"_id": job_id, "tenant": ctx.tenant})
        return None if found is None else _job(found)

    async def unfinished(self, ctx: Context) -> list[Job]:
        found = self._jobs.find({"tenant": ctx.tenant, "status": RUNNING}, sort=[("_id", 1)])
        return [_job(doc) for doc in await found.to_list(None)]

    async def run_batch(self, ctx: Context, job: Job, size: int) -> tuple[Job, Indexed]:
        doc = await self._jobs.find_one({"_id": job.id, "tenant": job.tenant})
        if doc is None:
            raise LookupError(f"reindex job {job.id} vanished")
        if doc["status"] == COMPLETED:
            return _job(doc), []
        cursor: ObjectId | None = doc.get("cursor")
        where = _scope(job.tenant, job.types)
        if cursor is not None:
            where["_id"] = {"$gt": cursor}
        resources = self._db[docs.RESOURCES]
        found = resources.find(
            where, {"body": 1, "version": 1, "deleted": 1}, sort=[("_id", 1)], limit=size
        )
        rows = await found.to_list(None)
        for row in rows:
            body = row.get("body")
            deleted = row.get("deleted") or body is None
            entries = {} if deleted else mongodb_search.index_entries(jsonutil.loads(bytes(body)))
            await resources.update_one(
                {"_id": row["_id"], "version": row["version"]}, {"$set": {"idx": entries}}
            )
        done = len(rows) < size
        indexed = await self._mark_indexed(doc) if done else []
        now = _now()
        change: dict[str, Any] = {
            "$set": {
                "cursor": rows[-1]["_id"] if rows else cursor,
                "status": COMPLETED if done else RUNNING,
                "updated_at": now,
                "finished_at": now if done else None,
                "runner": RUNNER,
            },
            "$inc": {"processed": len(rows)},
        }
        if done:
            change["$unset"] = {"active": ""}
        updated = await self._jobs.find_one_and_update(
            {"_id": job.id, "cursor": cursor, "status": RUNNING}, change,
            return_document=ReturnDocument.AFTER,
        )  # fmt: skip
        if updated is None:  # another worker ran this batch of the job first
            again = await self._jobs.find_one({"_id": job.id})
            return _job(again or doc), []
        return _job(updated), indexed

    async def _mark_indexed(self, doc: dict[str, Any]) -> Indexed:
        """Record the job's SearchParameter versions that are still current as indexed."""
        indexed: Indexed = []
        for resource_id, version in doc.get("params") or []:
            current = await self._db[docs.RESOURCES].find_one(
                {"tenant": doc["tenant"], "type": "SearchParameter", "id": resource_id,
                 "deleted": False}, {"version": 1},
            )  # fmt: skip
            if current is not None and current["version"] == version:
                await self._db[STATE].update_one(
                    {"_id": resource_id}, {"$set": {"version": version}}, upsert=True
                )
                indexed.append((resource_id, int(version)))
        return indexed


async def reindex(
    db: Any,
    ctx: Context,
    types: tuple[str, ...] = (),
    *,
    progress: Progress | None = None,
    batch: int = BATCH,
) -> int:
    """Run (or resume) the job over ctx.tenant's resources of `types` (or all) to its
    end, marking the parameters it indexed; returns how many resources it rebuilt."""
    jobs = MongoReindexJobs(db)
    job = await jobs.start(ctx, tuple(sorted(set(types))))
    while job.status != COMPLETED:
        job, indexed = await jobs.run_batch(ctx, job, batch)
        custom.REGISTRY.mark_indexed(indexed)
        if progress is not None:
            progress(job.processed, job.total)
    return job.processed
