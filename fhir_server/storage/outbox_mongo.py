"""The search-index outbox of the MongoDB store: collection `outbox`
(mongodb_documents.OUTBOX), one document per resource write or delete, inserted by a
write hook of MongoStore inside the resource's multi-document transaction (with its
session), so it commits or aborts with the resource.

Document: {_id: ObjectId, tenant, type, id, version, attempts, due, error, owner};
`due` in unix seconds (0 = now), `error` an error type, never patient data, `owner` the
token of the claim that holds the entry (absent or None when none does). Entries are
taken in (due, `_id`) order, which index `by_due` serves without sorting: new entries
(due 0) by `_id` (ObjectIds increase with time), then retried ones as they fall due.
Order across resources does not matter, and per resource the index's external
versions keep the newest (fhir_server.outbox). With a sharded cluster the collection
stays unsharded (it is small: entries live until the indexer has applied them).

Claims, with several API workers on one database: MongoDB has no "update the first n
matching documents", so a claim is three steps, each safe against the others:
1. find the ids of the first `limit` due entries (index by_due);
2. one update_many on exactly those ids *that are still due*: it sets `owner` to a new
   token and `due` to the end of the lease. Every document's update is atomic and its
   filter is evaluated again at the moment of writing, so of two workers racing for
   an entry exactly one sets its owner; the other's filter no longer matches;
3. read back which of them carry the token: those are this claim's.
A worker that lost every candidate to another tries again with the next due ones (at
most CLAIM_ROUNDS times). `done`, `retry_later` and `release` filter on the token too,
so a worker whose lease ran out cannot remove or reschedule an entry another worker
has taken over. Lease times are the workers' clocks (see fhir_server.outbox).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pymongo import ASCENDING

from fhir_server.outbox import OutboxEntry
from fhir_server.storage.mongodb_documents import OUTBOX

if TYPE_CHECKING:
    from fhir_server.storage.base import StoredResource
    from fhir_server.storage.mongodb import MongoStore, MongoTransaction

# how often a claim that lost all its candidates to other workers looks again
CLAIM_ROUNDS = 3
_ORDER = [("due", ASCENDING), ("_id", ASCENDING)]


async def record(txn: MongoTransaction, stored: StoredResource) -> None:
    """The MongoStore write hook: the outbox entry of `stored`, in the transaction."""
    await txn.collection(OUTBOX).insert_one(
        {
            "tenant": txn.context.tenant,
            "type": stored.resource_type,
            "id": stored.id,
            "version": stored.version,
            "attempts": 0,
            "due": 0.0,
            "error": None,
        },
        session=txn.session,
    )


class MongoOutbox:
    """fhir_server.outbox.Outbox on a MongoStore's `outbox` collection."""

    def __init__(self, store: MongoStore) -> None:
        self._collection: Any = store.db[OUTBOX]

    @classmethod
    async def enable(cls, store: MongoStore) -> MongoOutbox:
        """Make every write of `store` add its outbox entry; create the index (idempotent)."""
        if record not in store.write_hooks:
            store.write_hooks.append(record)
        outbox = cls(store)
        await outbox._collection.create_index(
            [("due", ASCENDING), ("_id", ASCENDING)], name="by_due"
        )
        return outbox

    async def claim(self, now: float, limit: int, lease_seconds: float) -> list[OutboxEntry]:
        owner = uuid.uuid4().hex
        claimed: list[OutboxEntry] = []
        for _ in range(CLAIM_ROUNDS):
            candidates = await self._candidates(now, limit - len(claimed))
            if not candidates:
                break
            taken = await self._take(candidates, now, now + lease_seconds, owner)
            claimed.extend(taken)
            if taken or len(claimed) >= limit:
                break
        return claimed

    async def _candidates(self, now: float, limit: int) -> list[ObjectId]:
        """Step 1: the ids of the first `limit` due entries."""
        cursor = self._collection.find({"due": {"$lte": now}}, {"_id": 1}).sort(_ORDER)
        return [doc["_id"] for doc in await cursor.limit(limit).to_list(length=limit)]

    async def _take(
        self, ids: list[ObjectId], now: float, until: float, owner: str
    ) -> list[OutboxEntry]:
        """Steps 2 and 3: lease those of `ids` that are still due to `owner`."""
        await self._collection.update_many(
            {"_id": {"$in": ids}, "due": {"$lte": now}},
            {"$set": {"owner": owner, "due": until}},
        )
        cursor = self._collection.find({"_id": {"$in": ids}, "owner": owner}).sort(_ORDER)
        return [
            OutboxEntry(str(doc["_id"]), doc["tenant"], doc["type"], doc["id"],
                        int(doc["version"]), int(doc.get("attempts", 0)), owner)  # fmt: skip
            for doc in await cursor.to_list(length=len(ids))
        ]

    async def due(self, now: float, limit: int) -> list[OutboxEntry]:
        """The entries a claim at `now` would take, without claiming them (a look for
        tools and tests)."""
        cursor = self._collection.find({"due": {"$lte": now}}).sort(_ORDER).limit(limit)
        return [
            OutboxEntry(str(doc["_id"]), doc["tenant"], doc["type"], doc["id"],
                        int(doc["version"]), int(doc.get("attempts", 0)))  # fmt: skip
            for doc in await cursor.to_list(length=limit)
        ]

    async def done(self, entries: Sequence[OutboxEntry]) -> int:
        if not entries:
            return 0
        result = await self._collection.delete_many(_owned(entries))
        return int(result.deleted_count)

    async def retry_later(self, entries: Sequence[OutboxEntry], due: float, error: str) -> int:
        return await self._update(
            entries, {"$inc": {"attempts": 1}, "$set": {"due": due, "error": error, "owner": None}}
        )

    async def release(self, entries: Sequence[OutboxEntry]) -> int:
        return await self._update(entries, {"$set": {"due": 0.0, "owner": None}})

    async def _update(self, entries: Sequence[OutboxEntry], update: dict[str, Any]) -> int:
        if not entries:
            return 0
        result = await self._collection.update_many(_owned(entries), update)
        return int(result.modified_count)

    async def pending(self) -> int:
        return int(await self._collection.count_documents({}))


def _owned(entries: Sequence[OutboxEntry]) -> dict[str, Any]:
    """The entries among `entries` still held by their claim (one claim per batch, so
    one owner; grouped in case a caller mixes batches)."""
    by_owner: dict[str, list[ObjectId]] = {}
    for entry in entries:
        by_owner.setdefault(entry.owner, []).append(ObjectId(entry.key))
    clauses = [{"_id": {"$in": ids}, "owner": owner} for owner, ids in by_owner.items()]
    return clauses[0] if len(clauses) == 1 else {"$or": clauses}
