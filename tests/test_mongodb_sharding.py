"""The MongoDB store declares its shard keys when it connects through mongos
(fhir_server/storage/mongodb_sharding.py).

Checked against recorded commands only: tests/mongo_sharded.py is the mongomock
facade answering `hello` as mongos and recording the admin commands; no sharded
cluster runs here, so whether one accepts them, and how documents move between shards
when `pc` changes, is not tested.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fhir_server.errors import FHIRError
from fhir_server.storage.base import Context
from fhir_server.storage.mongodb import MongoStore, StoreUnavailable
from mongo_sharded import AsyncMockMongos

pytestmark = pytest.mark.anyio
CTX = Context()
URL = "mongodb://127.0.0.1:1/fhir"

DECLARED = [
    {"enableSharding": "fhir"},
    {"shardCollection": "fhir.resources", "key": {"tenant": 1, "pc": 1}},
    {"shardCollection": "fhir.history", "key": {"tenant": 1, "pc": 1}},
    {"shardCollection": "fhir.inputs", "key": {"tenant": 1, "_id": "hashed"}},
    {"shardCollection": "fhir.resource_ids", "key": {"_id": "hashed"}},
]


@pytest.fixture
async def mongos() -> AsyncMockMongos:
    return AsyncMockMongos()


@pytest.fixture
async def store(mongos: AsyncMockMongos) -> AsyncIterator[MongoStore]:
    opened = await MongoStore.open(URL, client=mongos)
    try:
        yield opened
    finally:
        await opened.close()


async def test_start_up_through_mongos_declares_the_shard_keys(
    mongos: AsyncMockMongos, store: MongoStore
) -> None:
    assert store.sharded
    assert mongos.commands == DECLARED
    # key order is part of a shard key: tenant first
    assert [list(c["key"]) for c in mongos.commands[1:]] == [
        ["tenant", "pc"], ["tenant", "pc"], ["tenant", "_id"], ["_id"]]  # fmt: skip
    resources = await store.db["resources"].index_information()
    history = await store.db["history"].index_information()
    inputs = await store.db["inputs"].index_information()
    # unique indexes must start with the shard key: these two are plain on a cluster
    assert resources["by_type_id"]["key"] == [("tenant", 1), ("type", 1), ("id", 1)]
    assert not resources["by_type_id"].get("unique")
    assert not history["by_version"].get("unique")
    # the index each shard key needs exists before shardCollection
    assert resources["by_compartment"]["key"] == [("tenant", 1), ("pc", 1)]
    assert history["by_compartment"]["key"] == [("tenant", 1), ("pc", 1)]
    assert inputs["by_shard_key"]["key"] == [("tenant", 1), ("_id", "hashed")]


async def test_a_second_start_finds_the_keys_declared(mongos: AsyncMockMongos) -> None:
    for _ in range(2):
        store = await MongoStore.open(URL, client=mongos)
        await store.close()
    # the second start only repeats enableSharding (harmless): the catalogue has the keys
    assert mongos.commands == DECLARED + [{"enableSharding": "fhir"}]


async def test_a_replica_set_declares_nothing() -> None:
    from mongo_async import AsyncMockClient

    store = await MongoStore.open(URL, client=AsyncMockClient())
    try:
        assert not store.sharded
        info = await store.db["resources"].index_information()
        assert info["by_type_id"]["unique"] is True
    finally:
        await store.close()


async def test_a_collection_sharded_on_another_key_stops_the_start(
    mongos: AsyncMockMongos,
) -> None:
    mongos.catalogue("fhir.history", {"tenant": 1, "type": 1})
    with pytest.raises(StoreUnavailable) as refused:
        await MongoStore.open(URL, client=mongos)
    assert str(refused.value) == (
        "MongoDB collection fhir.history is sharded on {tenant: 1, type: 1}, but "
        "fhir-fusion shards it on {tenant: 1, pc: 1}; reshard it (reshardCollection) or "
        "use another database"
    )
    assert {"shardCollection": "fhir.history", "key": {"tenant": 1, "pc": 1}} \
        not in mongos.commands


async def test_the_same_key_with_float_directions_is_the_same_key(
    mongos: AsyncMockMongos,
) -> None:
    mongos.catalogue("fhir.resources", {"tenant": 1.0, "pc": 1.0})  # as BSON doubles
    store = await MongoStore.open(URL, client=mongos)
    await store.close()
    assert DECLARED[1] not in mongos.commands
    assert DECLARED[2] in mongos.commands


async def test_an_unsharded_deployment_is_converted(mongos: AsyncMockMongos) -> None:
    # the unique indexes an earlier, unsharded start created
    mongos.sync["fhir"]["resources"].create_index(
        [("tenant", 1), ("type", 1), ("id", 1)], unique=True, name="by_type_id")
    mongos.sync["fhir"]["history"].create_index(
        [("tenant", 1), ("type", 1), ("id", 1), ("version", 1)], unique=True, name="by_version")
    store = await MongoStore.open(URL, client=mongos)
    try:
        assert not (await store.db["resources"].index_information())["by_type_id"].get("unique")
        assert not (await store.db["history"].index_information())["by_version"].get("unique")
        assert mongos.commands == DECLARED
    finally:
        await store.close()


def _observation(oid: str, patient: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"text": "pulse"}, "subject": {"reference": f"Patient/{patient}"}}  # fmt: skip


async def test_writes_on_a_cluster_name_the_shard_key_and_claim_the_id(
    store: MongoStore,
) -> None:
    async with store.transaction(CTX) as txn:
        await txn.update(_observation("o1", "p1"))
    async with store.transaction(CTX) as txn:
        await txn.update(_observation("o1", "p2"))  # moved to another patient: pc changes
    async with store.transaction(CTX) as txn:
        await txn.delete("Observation", "o1")
    current = await store.db["resources"].find_one({"id": "o1"})
    assert current is not None
    assert (current["version"], current["pc"], current["deleted"]) == (3, "p2", True)
    versions = await store.db["history"].find({"id": "o1"}).sort("version").to_list(None)
    assert [(v["version"], v["pc"]) for v in versions] == [(1, "p1"), (2, "p2"), (3, "p2")]
    ids = await store.db["resource_ids"].find({}).to_list(None)
    assert ids == [{"_id": "default/Observation/o1"}]  # one per id, kept after the delete


async def test_two_creates_of_one_id_on_a_cluster_make_one_resource(store: MongoStore) -> None:
    # resources has no unique index on a cluster, and the two documents would have other
    # pc values, so other shards: resource_ids is what refuses the second. (The facade is
    # one shard, where the history _id collides too; the resource_ids count is the check.)
    async with store.transaction(CTX) as first:
        await first.update(_observation("o9", "p1"))
        with pytest.raises(FHIRError) as refused:
            async with store.transaction(CTX) as second:
                await second.update(_observation("o9", "p2"))
    assert refused.value.status == 409
    assert await store.db["resources"].count_documents({"id": "o9"}) == 1
    assert await store.db["resource_ids"].count_documents({}) == 1
