"""The search-index outbox of the MongoDB store: collection `outbox`
(mongodb_documents.OUTBOX), one document per resource write or delete, inserted by a
write hook of MongoStore inside the resource's multi-document transaction (with its
session), so it commits or aborts with the resource.

Document: {_id: ObjectId, tenant, type, id, version, attempts, due, error}; `due` in
unix seconds (0 = now), `error` an error type, never patient data. Entries are taken
in (due, `_id`) order, which index `by_due` serves without sorting: new entries (due 0)
by `_id` (ObjectIds increase with time), then retried ones as they fall due. Order
across resources does not matter, and per resource the index's external versions keep
the newest (fhir_server.outbox). With a sharded cluster the collection stays unsharded (it is small:
entries live until the indexer has applied them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pymongo import ASCENDING

from fhir_server.outbox import OutboxEntry
from fhir_server.storage.mongodb_documents import OUTBOX

if TYPE_CHECKING:
    from fhir_server.storage.base import StoredResource
    from fhir_server.storage.mongodb import MongoStore, MongoTransaction


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

    async def due(self, now: float, limit: int) -> list[OutboxEntry]:
        # (due, _id): the order of index by_due, so no in-memory sort of a large backlog
        cursor = (
            self._collection.find({"due": {"$lte": now}})
            .sort([("due", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [
            OutboxEntry(str(doc["_id"]), doc["tenant"], doc["type"], doc["id"],
                        int(doc["version"]), int(doc.get("attempts", 0)))  # fmt: skip
            for doc in await cursor.to_list(length=limit)
        ]

    async def done(self, entries: Sequence[OutboxEntry]) -> None:
        if entries:
            await self._collection.delete_many({"_id": {"$in": [ObjectId(e.key) for e in entries]}})

    async def retry_later(self, entries: Sequence[OutboxEntry], due: float, error: str) -> None:
        if entries:
            await self._collection.update_many(
                {"_id": {"$in": [ObjectId(e.key) for e in entries]}},
                {"$inc": {"attempts": 1}, "$set": {"due": due, "error": error}},
            )

    async def pending(self) -> int:
        return int(await self._collection.count_documents({}))
