"""Rebuilding the search index entries of the MongoDB store (`fhir-fusion reindex`), so
that a custom SearchParameter stored after the resources it applies to finds them too.

A resource document's `idx` is recomputed from its body (mongodb_search.index_entries)
in `_id` order, a batch at a time, outside any transaction: each update names the
version it read, so a resource written meanwhile (whose writer computed its entries
with the parameter already defined) is left as it is. Running it again redoes the
work from the start, which is harmless. When it has gone through every resource of
the parameters' types, the pending parameters are recorded as indexed (collection
search_param_state, read again at start-up) and become searchable.

As in SQLite, the parameter registry is one per process and a parameter counts as
indexed once the run for one tenant has finished.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server import jsonutil
from fhir_server.storage import mongodb_documents as docs
from fhir_server.storage import mongodb_search
from fhir_server.storage.base import Context
from search import custom

STATE = "search_param_state"  # {_id: SearchParameter id, version: the version indexed}
BATCH = 500

Progress = Callable[[int, int], None]


async def indexed_versions(db: Any) -> dict[str, int]:
    """The version of each SearchParameter whose reindex has finished."""
    found = db[STATE].find({}, {"version": 1})
    return {doc["_id"]: int(doc["version"]) for doc in await found.to_list(None)}


async def reindex(
    db: Any,
    ctx: Context,
    types: tuple[str, ...] = (),
    *,
    progress: Progress | None = None,
    batch: int = BATCH,
) -> int:
    """Recompute the index entries of ctx.tenant's current resources (of `types`, or
    all); returns how many were rewritten."""
    pending = custom.REGISTRY.pending(list(types) if types else None)
    where: dict[str, Any] = {"tenant": ctx.tenant, "deleted": False}
    if types:
        where["type"] = {"$in": list(types)}
    resources = db[docs.RESOURCES]
    total = await resources.count_documents(where)
    done = 0
    last: Any = None
    while True:
        page = where if last is None else {**where, "_id": {"$gt": last}}
        found = resources.find(page, {"body": 1, "version": 1}, sort=[("_id", 1)], limit=batch)
        rows = await found.to_list(None)
        if not rows:
            break
        for row in rows:
            entries = mongodb_search.index_entries(jsonutil.loads(bytes(row["body"])))
            await resources.update_one(
                {"_id": row["_id"], "version": row["version"]}, {"$set": {"idx": entries}}
            )
        done += len(rows)
        last = rows[-1]["_id"]
        if progress is not None:
            progress(done, total)
    for param in pending:
        await db[STATE].update_one(
            {"_id": param.resource_id}, {"$set": {"version": param.version}}, upsert=True
        )
    custom.REGISTRY.mark_indexed((p.resource_id, p.version) for p in pending)
    return done
