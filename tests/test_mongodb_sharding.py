"""The MongoDB store on a sharded cluster (fhir_server/storage/mongodb_sharding.py):
`fhir-fusion mongodb shard` declares the shard keys (the operator, once, with cluster
rights); `serve` through mongos only detects the cluster, and warns naming that
command when it can see the collections are not sharded (review-mongo #5).

Checked against recorded commands only: tests/mongo_sharded.py is the mongomock
facade answering `hello` as mongos and recording the admin commands; no sharded
cluster runs here, so whether one accepts them, and how documents move between shards
when `pc` changes, is not tested.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fhir_server import cli, mongodb_command
from fhir_server.errors import FHIRError
from fhir_server.storage import mongodb_sharding
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
        await mongodb_sharding.declare(mongos, opened.db)
        yield opened
    finally:
        await opened.close()


async def _shard(mongos: AsyncMockMongos) -> list[tuple[str, str]]:
    """What `fhir-fusion mongodb shard` does, on the facade client."""
    store = await MongoStore.open(URL, client=mongos)
    try:
        return await mongodb_sharding.declare(mongos, store.db)
    finally:
        await store.close()


async def test_serve_through_mongos_declares_nothing_and_names_the_command(
    mongos: AsyncMockMongos, caplog: pytest.LogCaptureFixture
) -> None:
    # an application user with readWrite only cannot run enableSharding/shardCollection
    with caplog.at_level(logging.WARNING, "fhir_server.storage.mongodb_sharding"):
        store = await MongoStore.open(URL, client=mongos)
    try:
        assert store.sharded  # the cluster's design: plain indexes, resource_ids
        assert mongos.commands == []
        info = await store.db["resources"].index_information()
        assert not info["by_type_id"].get("unique")
        ids = await store.db["resource_ids"].index_information()
        assert ids["by_shard_key"]["key"] == [("_id", "hashed")]  # the collection exists
    finally:
        await store.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "MongoDB collections resources, history, inputs, resource_ids of fhir are not "
        "sharded: every document stays on one shard. Run `fhir-fusion mongodb shard "
        "--store <mongodb://... URL of a mongos>` once, as a user with the clusterManager role"
    ]


async def test_serve_without_rights_on_the_catalogue_starts_quietly(
    mongos: AsyncMockMongos, caplog: pytest.LogCaptureFixture
) -> None:
    mongos.refuse_catalogue = True  # Unauthorized (13) on config.collections
    with caplog.at_level(logging.WARNING, "fhir_server.storage.mongodb_sharding"):
        store = await MongoStore.open(URL, client=mongos)
    await store.close()
    assert store.sharded
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_serve_after_the_command_does_not_warn(
    mongos: AsyncMockMongos, caplog: pytest.LogCaptureFixture
) -> None:
    await _shard(mongos)  # its own open warns: nothing was sharded yet
    caplog.clear()
    with caplog.at_level(logging.WARNING, "fhir_server.storage.mongodb_sharding"):
        store = await MongoStore.open(URL, client=mongos)
    await store.close()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert mongos.commands == DECLARED  # serve added none


async def test_the_shard_command_declares_the_shard_keys(
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


async def test_a_second_run_of_the_command_finds_the_keys_declared(
    mongos: AsyncMockMongos,
) -> None:
    first = await _shard(mongos)
    second = await _shard(mongos)
    # the second run only repeats enableSharding (harmless): the catalogue has the keys
    assert mongos.commands == DECLARED + [{"enableSharding": "fhir"}]
    assert first[0] == ("fhir.resources", "sharded on {tenant: 1, pc: 1}")
    assert second == [
        ("fhir.resources", "already sharded on {tenant: 1, pc: 1}"),
        ("fhir.history", "already sharded on {tenant: 1, pc: 1}"),
        ("fhir.inputs", "already sharded on {tenant: 1, _id: 'hashed'}"),
        ("fhir.resource_ids", "already sharded on {_id: 'hashed'}"),
    ]


async def test_the_cli_command_shards_through_the_store_url(
    mongos: AsyncMockMongos, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def open_facade(url: str) -> MongoStore:
        assert url == URL  # from FHIR_FUSION_STORE
        return await MongoStore.open(url, client=mongos)

    monkeypatch.setattr(mongodb_command, "open_store", open_facade)
    monkeypatch.setenv("FHIR_FUSION_STORE", URL)
    # asyncio.run inside the command: run it in a thread, off this test's event loop
    import anyio.to_thread

    code = await anyio.to_thread.run_sync(cli.main, ["mongodb", "shard"])
    assert code == 0
    assert mongos.commands == DECLARED
    assert capsys.readouterr().out.splitlines()[-1] == (
        "fhir.resource_ids: sharded on {_id: 'hashed'}")


async def test_the_cli_command_refuses_a_replica_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mongo_async import AsyncMockClient

    async def open_facade(url: str) -> MongoStore:
        return await MongoStore.open(url, client=AsyncMockClient())

    monkeypatch.setattr(mongodb_command, "open_store", open_facade)
    import anyio.to_thread

    code = await anyio.to_thread.run_sync(cli.main, ["mongodb", "shard", "--store", URL])
    assert code == 1
    assert capsys.readouterr().err == (
        "fhir-fusion: MongoDB at 127.0.0.1:1 is not a sharded cluster (its hello does not "
        "come from a mongos router): nothing to shard\n"
    )


async def test_a_replica_set_declares_nothing() -> None:
    from mongo_async import AsyncMockClient

    store = await MongoStore.open(URL, client=AsyncMockClient())
    try:
        assert not store.sharded
        info = await store.db["resources"].index_information()
        assert info["by_type_id"]["unique"] is True
    finally:
        await store.close()


async def test_a_collection_sharded_on_another_key_stops_the_start_and_the_command(
    mongos: AsyncMockMongos,
) -> None:
    mongos.catalogue("fhir.history", {"tenant": 1, "type": 1})
    with pytest.raises(StoreUnavailable) as refused:
        await MongoStore.open(URL, client=mongos)
    assert mongos.closed  # the client is closed on this start-up error (#20)
    assert "fhir.history is sharded on {tenant: 1, type: 1}" in str(refused.value)
    store = await MongoStore.open(URL, client=AsyncMockMongos())  # a fresh cluster
    await store.close()
    with pytest.raises(StoreUnavailable) as refused:
        await mongodb_sharding.declare(mongos, mongos["fhir"])
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
    await _shard(mongos)
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
        # serve keeps them (right while unsharded; dropping needs no cluster rights but
        # a plain index of the same name would conflict) ...
        assert (await store.db["resources"].index_information())["by_type_id"]["unique"]
        # ... the command makes them plain, then shards
        await mongodb_sharding.declare(mongos, store.db)
        assert not (await store.db["resources"].index_information())["by_type_id"].get("unique")
        assert not (await store.db["history"].index_information())["by_version"].get("unique")
        assert mongos.commands == DECLARED
    finally:
        await store.close()
    store = await MongoStore.open(URL, client=mongos)  # and serve starts on the result
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
