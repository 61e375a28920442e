"""The shard keys of the MongoDB store, declared by the store itself when it connects
through a `mongos` router (its `hello` answers msg "isdbgrid"); README "At scale: MongoDB".

    resources     {tenant: 1, pc: 1}       a patient's record (current) on one shard
    history       {tenant: 1, pc: 1}       and its past versions beside it
    inputs        {tenant: 1, _id: "hashed"}  raw feed inputs spread evenly
    resource_ids  {_id: "hashed"}          one document per (tenant, type, id)

`pc` is the patient compartment (mongodb_documents.patient_compartment). The other
collections (claims, claim_leases, counters, feed_counts, outbox) stay unsharded.

Why resource_ids: MongoDB shards a collection only if each of its unique indexes has
the shard key as a prefix, and enforces uniqueness only within a shard otherwise. The
unsharded store keeps one resource per (tenant, type, id) with unique indexes that do
not start with `pc` (resources.by_type_id, history.by_version), and two creates of
the same id naming different patients would land on different shards. So on a
sharded cluster those two indexes are created without `unique`, and a create writes
`{_id: "<tenant>/<type>/<id>"}` into resource_ids in the same transaction
(`claim_id`): sharded on its `_id`, that collection's _id index is unique across the
cluster, so the second of two concurrent creates fails (write conflict or duplicate
key: a 409) and its transaction writes nothing. Versions stay unique without an index:
each later version replaces the current document conditionally on the previous
version number, inside the transaction.

`pc` can change on update (an Observation moved to another patient): since 4.2
MongoDB changes a document's shard key value when the write runs in a transaction and
its filter names the full current shard key, which the store's replace filters do
(tenant and the pc read in the same transaction); the document moves shard.

Start-up is idempotent: enableSharding is repeated harmlessly, and a collection
already sharded on the same key is left alone. One sharded on another key stops the
start (StoreUnavailable naming the collection and both keys): resharding is an
operator's decision (`reshardCollection`). A collection not yet sharded but created
by an unsharded deployment of the store still has the two unique indexes; they are
dropped and made again without `unique` before it is sharded.
"""

from __future__ import annotations

from typing import Any


from fhir_server.storage import mongodb_documents as docs

# one document per resource id ever created on a sharded cluster (see the module doc)
RESOURCE_IDS = "resource_ids"

SHARD_KEYS: dict[str, dict[str, Any]] = {
    docs.RESOURCES: {"tenant": 1, "pc": 1},
    docs.HISTORY: {"tenant": 1, "pc": 1},
    docs.INPUTS: {"tenant": 1, "_id": "hashed"},
    RESOURCE_IDS: {"_id": "hashed"},
}

# the store's unique indexes that cannot coexist with the shard keys (mongodb._INDEXES)
_NOT_UNIQUE_WHEN_SHARDED = {docs.RESOURCES: "by_type_id", docs.HISTORY: "by_version"}

# the index each shard key needs before shardCollection (resources has by_compartment)
_SHARD_KEY_INDEXES: dict[str, str] = {
    docs.HISTORY: "by_compartment",
    docs.INPUTS: "by_shard_key",
    RESOURCE_IDS: "by_shard_key",
}

IndexSpecs = dict[str, list[tuple[list[tuple[str, int]], dict[str, Any]]]]


def through_mongos(hello: dict[str, Any]) -> bool:
    """Whether `hello` came from a mongos router, i.e. the database is a sharded cluster."""
    return hello.get("msg") == "isdbgrid"


def index_specs(indexes: IndexSpecs, sharded: bool) -> IndexSpecs:
    """The store's index specifications, without `unique` on the indexes that a shard
    key on `pc` forbids when `sharded`."""
    if not sharded:
        return indexes
    adjusted: IndexSpecs = {}
    for collection, specs in indexes.items():
        name = _NOT_UNIQUE_WHEN_SHARDED.get(collection)
        adjusted[collection] = [
            (keys, {k: v for k, v in options.items() if k != "unique"}
             if options.get("name") == name else options)
            for keys, options in specs
        ]  # fmt: skip
    return adjusted


async def before_indexes(db: Any, hello: dict[str, Any]) -> bool:
    """Called before the store creates its indexes: whether the store is sharded; if so,
    the unique indexes of an unsharded deployment are dropped (made again without
    `unique` by the store) on the collections that are not sharded yet."""
    if not through_mongos(hello):
        return False
    for collection, name in _NOT_UNIQUE_WHEN_SHARDED.items():
        if await _shard_key(db, collection) is not None:
            continue  # already sharded: its indexes were converted when it was
        info = await db[collection].index_information()
        if info.get(name, {}).get("unique"):
            await db[collection].drop_index(name)
    return True


async def declare(client: Any, db: Any) -> None:
    """enableSharding for the database, shardCollection for each collection of
    SHARD_KEYS that is not sharded yet (idempotent); StoreUnavailable when one is
    sharded on another key."""
    await client.admin.command({"enableSharding": db.name})
    for collection, key in SHARD_KEYS.items():
        current = await _shard_key(db, collection)
        if current is not None:
            if _same_key(current, key):
                continue
            from fhir_server.storage.mongodb import StoreUnavailable

            raise StoreUnavailable(
                f"MongoDB collection {db.name}.{collection} is sharded on "
                f"{_describe(current)}, but fhir-fusion shards it on {_describe(key)}; "
                "reshard it (reshardCollection) or use another database"
            )
        index = _SHARD_KEY_INDEXES.get(collection)
        if index is not None:
            await db[collection].create_index(list(key.items()), name=index)
        await client.admin.command(
            {"shardCollection": f"{db.name}.{collection}", "key": dict(key)}
        )


async def claim_id(
    db: Any, session: Any, tenant: str, resource_type: str, resource_id: str
) -> None:
    """In the creating transaction: take (tenant, type, id) cluster-wide (module doc)."""
    await db[RESOURCE_IDS].insert_one(
        {"_id": f"{tenant}/{resource_type}/{resource_id}"}, session=session
    )


async def _shard_key(db: Any, collection: str) -> dict[str, Any] | None:
    """The key `collection` is sharded on, from the cluster's catalogue (config.collections),
    or None. Since 8.0 the catalogue also lists unsharded collections (unsplittable)."""
    entry = await db.client["config"]["collections"].find_one(
        {"_id": f"{db.name}.{collection}"}
    )
    if entry is None or entry.get("dropped") or entry.get("unsplittable"):
        return None
    key = entry.get("key")
    return dict(key) if key else None


def _same_key(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Field order and directions alike (1 and 1.0 are the same direction)."""

    def normal(key: dict[str, Any]) -> list[tuple[str, Any]]:
        return [(f, float(v) if isinstance(v, (int, float)) else v) for f, v in key.items()]

    return normal(current) == normal(wanted)


def _describe(key: dict[str, Any]) -> str:
    fields = ", ".join(
        f"{f}: {v!r}" if isinstance(v, str) else f"{f}: {int(v)}" for f, v in key.items()
    )
    return "{" + fields + "}"


__all__ = ["RESOURCE_IDS", "SHARD_KEYS", "before_indexes", "claim_id", "declare",
           "index_specs", "through_mongos"]  # fmt: skip
