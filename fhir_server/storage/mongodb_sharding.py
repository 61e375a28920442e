"""The shard keys of the MongoDB store, declared once by the operator with
`fhir-fusion mongodb shard` (`declare`, run as a user with the clusterManager role)
through a `mongos` router; README "At scale: MongoDB".

`serve` needs only readWrite on its database: when its `hello` answers msg "isdbgrid"
it takes the cluster's design (the non-unique indexes and resource_ids below), creates
the shard keys' indexes, and looks in the cluster catalogue whether the collections are
sharded (`check_layout`): if not, it logs a warning naming the command; if it may not
read the catalogue, it says nothing more and starts.

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

The command is idempotent: enableSharding is repeated harmlessly (needless since
MongoDB 6.0, kept for 5.0), and a collection already sharded on the same key is left
alone. One sharded on another key stops it (and `serve`, when it may read the
catalogue): StoreUnavailable naming the collection and both keys; resharding is an
operator's decision (`reshardCollection`). A collection not yet sharded but created
by an unsharded deployment still has the two unique indexes: `serve` keeps them
(correct while the collection is on one shard), the command drops them and makes them
again without `unique` before it shards the collection.
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.errors import OperationFailure

from fhir_server.storage import mongodb_documents as docs

log = logging.getLogger(__name__)

SHARD_COMMAND = "fhir-fusion mongodb shard --store <mongodb://... URL of a mongos>"

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


async def serve_index_specs(db: Any, indexes: IndexSpecs, sharded: bool) -> IndexSpecs:
    """The indexes `serve` creates: on a cluster, `index_specs(…, sharded=True)` and the
    shard keys' indexes, except that a unique index an unsharded deployment made is kept
    until `declare` shards its collection (creating it again without `unique` under the
    same name would be an index conflict)."""
    if not sharded:
        return indexes
    specs = index_specs(indexes, True)
    for collection, name in _NOT_UNIQUE_WHEN_SHARDED.items():
        info = await db[collection].index_information()
        if info.get(name, {}).get("unique"):
            specs[collection] = [
                spec for spec in specs[collection] if spec[1].get("name") != name
            ]
    for collection, index in _SHARD_KEY_INDEXES.items():
        key = list(SHARD_KEYS[collection].items())
        specs[collection] = [*specs.get(collection, []), (key, {"name": index})]
    return specs


async def check_layout(db: Any) -> list[str]:
    """At `serve` through mongos: the collections of SHARD_KEYS not sharded yet (a
    warning names the command that shards them); StoreUnavailable for one sharded on
    another key. A user who may not read the cluster catalogue gets [] (the operator is
    trusted to have run the command)."""
    missing: list[str] = []
    try:
        for collection, key in SHARD_KEYS.items():
            current = await _shard_key(db, collection)
            if current is None:
                missing.append(collection)
            elif not _same_key(current, key):
                raise _wrong_key(db, collection, current, key)
    except OperationFailure as exc:  # Unauthorized (13) for a readWrite-only user
        log.info("MongoDB shard layout not checked (config.collections: code %s)", exc.code)
        return []
    if missing:
        log.warning(
            "MongoDB collections %s of %s are not sharded: every document stays on one "
            "shard. Run `%s` once, as a user with the clusterManager role",
            ", ".join(missing), db.name, SHARD_COMMAND,
        )
    return missing


async def declare(client: Any, db: Any) -> list[tuple[str, str]]:
    """The operator's command (`fhir-fusion mongodb shard`): enableSharding for the
    database, shardCollection for each collection of SHARD_KEYS not sharded yet (its
    unique indexes of an unsharded deployment made plain first, its shard key's index
    made), idempotent; StoreUnavailable when one is sharded on another key. Returns
    (namespace, what happened) per collection."""
    done: list[tuple[str, str]] = []
    await client.admin.command({"enableSharding": db.name})
    for collection, key in SHARD_KEYS.items():
        namespace = f"{db.name}.{collection}"
        current = await _shard_key(db, collection)
        if current is not None:
            if _same_key(current, key):
                done.append((namespace, f"already sharded on {_describe(key)}"))
                continue
            raise _wrong_key(db, collection, current, key)
        name = _NOT_UNIQUE_WHEN_SHARDED.get(collection)
        if name is not None:
            info = await db[collection].index_information()
            if info.get(name, {}).get("unique"):
                await db[collection].drop_index(name)
                await db[collection].create_index(info[name]["key"], name=name)
        index = _SHARD_KEY_INDEXES.get(collection)
        if index is not None:
            await db[collection].create_index(list(key.items()), name=index)
        await client.admin.command({"shardCollection": namespace, "key": dict(key)})
        done.append((namespace, f"sharded on {_describe(key)}"))
    return done


def _wrong_key(
    db: Any, collection: str, current: dict[str, Any], key: dict[str, Any]
) -> Exception:
    from fhir_server.storage.mongodb import StoreUnavailable

    return StoreUnavailable(
        f"MongoDB collection {db.name}.{collection} is sharded on "
        f"{_describe(current)}, but fhir-fusion shards it on {_describe(key)}; "
        "reshard it (reshardCollection) or use another database"
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


__all__ = ["RESOURCE_IDS", "SHARD_COMMAND", "SHARD_KEYS", "check_layout", "claim_id",
           "declare", "index_specs", "serve_index_specs", "through_mongos"]  # fmt: skip
