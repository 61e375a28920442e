"""Read-your-writes on MongoDB (fhir_server/storage/mongodb_causal.py): reads and
transactions run in causally consistent sessions advanced to the operation time of the
worker's last commit, so the server makes them wait for that write.

Checked against recorded behaviour only: the mongomock facade (tests/mongo_async.py)
gives each commit an operation time and records the sessions; it has one copy of the
data and never waits, so the waiting itself (afterClusterTime on a lagging shard or a
new primary) happens only on a real server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from bson import Timestamp

from fhir_server.storage.base import Context
from fhir_server.storage.mongodb import MongoStore
from mongo_async import AsyncMockClient
from search.query import parse_search

pytestmark = pytest.mark.anyio
CTX = Context()
FIRST_COMMIT = Timestamp(1_700_000_000, 1)


@pytest.fixture
async def client() -> AsyncMockClient:
    return AsyncMockClient()


@pytest.fixture
async def store(client: AsyncMockClient) -> AsyncIterator[MongoStore]:
    opened = await MongoStore.open("mongodb://127.0.0.1:1/fhir", client=client)
    try:
        yield opened
    finally:
        await opened.close()


async def test_reads_after_a_write_wait_for_its_commit(
    client: AsyncMockClient, store: MongoStore
) -> None:
    await store.read(CTX, "Patient", "p1")
    assert client.sessions[-1].operation_time is None  # nothing written yet: no wait
    async with store.transaction(CTX) as txn:
        await txn.create({"resourceType": "Patient", "name": [{"family": "Chalmers"}]}, "p1")
    started = len(client.sessions)
    assert await store.read(CTX, "Patient", "p1") is not None
    page = await store.search(CTX, parse_search("Patient", [("family", "Chalmers")]))
    assert [r.id for r in page.resources] == ["p1"]
    assert await store.vread(CTX, "Patient", "p1", 1) is not None
    assert (await store.history(CTX, "Patient", "p1"))[1] == 1
    reads = client.sessions[started:]
    assert len(reads) == 4  # one causally consistent session per read
    assert all(s.operation_time == FIRST_COMMIT for s in reads)
    assert all(s.cluster_time == {"clusterTime": FIRST_COMMIT} for s in reads)


async def test_the_next_transaction_starts_after_the_last_commit(
    client: AsyncMockClient, store: MongoStore
) -> None:
    async with store.transaction(CTX) as txn:
        await txn.update({"resourceType": "Patient", "id": "p1", "name": [{"family": "A"}]})
    async with store.transaction(CTX) as txn:
        # advanced to the first commit before it reads anything: its snapshot includes it
        assert txn.session.operation_time == FIRST_COMMIT
        await txn.update({"resourceType": "Patient", "id": "p1", "name": [{"family": "B"}]})
    assert txn.session.operation_time == Timestamp(1_700_000_000, 2)  # its own commit
    assert store._causal.operation_time == Timestamp(1_700_000_000, 2)
