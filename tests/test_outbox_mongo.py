"""The search-index outbox of the MongoDB store, through mongomock (tests/mongo_async.py:
no MongoDB server can run in CI; its transactions are emulated with an undo journal),
drained into the recording Elasticsearch stand-in by the real client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from elasticsearch_fake import FakeElasticsearch
from fhir_server import search_index
from fhir_server.outbox import Indexer, wait_drained
from fhir_server.storage.base import Context
from fhir_server.storage.mongodb import MongoStore
from fhir_server.storage.outbox_mongo import MongoOutbox
from mongo_async import AsyncMockClient
from search.elasticsearch_index import ElasticsearchIndex

pytestmark = pytest.mark.anyio
CTX = Context()


def _patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": "Chalmers"}]}


@pytest.fixture
async def store() -> AsyncIterator[MongoStore]:
    opened = await MongoStore.open("mongodb://127.0.0.1:1/fhir", client=AsyncMockClient())
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeElasticsearch]:
    server = await FakeElasticsearch().start()
    try:
        yield server
    finally:
        await server.stop()


async def test_entries_commit_and_abort_with_the_resource(store: MongoStore) -> None:
    outbox = await MongoOutbox.enable(store)
    await MongoOutbox.enable(store)  # idempotent: one hook
    async with store.transaction(CTX) as txn:
        await txn.update(_patient("p1"))
    with pytest.raises(RuntimeError):
        async with store.transaction(CTX) as txn:
            await txn.update(_patient("p2"))
            raise RuntimeError("the request failed after the write")
    async with store.transaction(CTX) as txn:
        await txn.delete("Patient", "p1")
    entries = await outbox.due(now=0.0, limit=10)
    assert [(e.tenant, e.resource_type, e.id, e.version) for e in entries] == [
        ("default", "Patient", "p1", 1), ("default", "Patient", "p1", 2)]  # fmt: skip


async def test_indexer_drains_and_reindex_rebuilds(
    store: MongoStore, fake: FakeElasticsearch
) -> None:
    outbox = await MongoOutbox.enable(store)
    index = ElasticsearchIndex.connect(fake.url)
    try:
        for pid in ("p1", "p2"):
            async with store.transaction(CTX) as txn:
                await txn.update(_patient(pid))
        async with store.transaction(CTX) as txn:
            await txn.delete("Patient", "p2")
        now = [5.0]
        indexer = Indexer(store, outbox, index, clock=lambda: now[0])
        fake.fail_ids = {"Patient/p1"}
        assert await indexer.drain_once() == 3
        assert [(e.id, e.attempts) for e in await outbox.due(now=1e12, limit=10)] == [("p1", 1)]
        fake.fail_ids = set()
        now[0] += 1.0
        assert await indexer.drain_once() == 1
        assert await outbox.pending() == 0
        assert fake.live() == {"Patient/p1": 1}
        fake.docs.clear()  # the index lost everything: rebuild it from the store
        done = await search_index.rebuild(store, index, "default", batch_size=1)
        assert (done.processed, done.total, done.failed) == (2, 2, 0)
        assert fake.live() == {"Patient/p1": 1}
        assert fake.docs[("fhir-fusion-default", "Patient/p2")] == (2, None)
    finally:
        await index.close()


async def test_rest_text_search_on_mongodb_asks_elasticsearch(
    store: MongoStore, fake: FakeElasticsearch
) -> None:
    import httpx

    from fhir_server.app import create_app

    running = await search_index.start(store, fake.url)
    try:
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://t/fhir/") as client:
            for cid in ("c1", "c2"):
                response = await client.put(f"Condition/{cid}", json={
                    "resourceType": "Condition", "id": cid,
                    "subject": {"reference": "Patient/p1"},
                    "text": {"status": "generated", "div":
                             '<div xmlns="http://www.w3.org/1999/xhtml">Hypertension</div>'}})
                assert response.status_code == 201, response.text  # fmt: skip
            await wait_drained(running.indexer)  # the tenant's index exists from here on
            fake.search_hits = [{"_id": "Condition/c2", "_score": None, "sort": [1.0, "", ""],
                                 "_source": {"resourceType": "Condition", "id": "c2"}}]
            found = await client.get("Condition", params={"_text": "hypertension"})
            assert found.status_code == 200, found.text
        assert [e["resource"]["id"] for e in found.json()["entry"]] == ["c2"]
        (request,) = fake.of("POST", "/fhir-fusion-default/_search")
        body = request.json()
        assert body["query"]["bool"]["filter"][1] == {"term": {"resourceType": "Condition"}}
        phrase = body["query"]["bool"]["must"][0]["bool"]["must"][0]["bool"]["should"][0]
        assert phrase["multi_match"]["query"] == "hypertension"
    finally:
        await running.stop(drain=True)
    assert store.fulltext is None
    assert fake.live() == {"Condition/c1": 1, "Condition/c2": 1}
