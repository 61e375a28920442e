"""The durable search-index outbox on a real SQLite file, drained by the indexer into
Elasticsearch (the real async client against tests/elasticsearch_fake.py, a recording
HTTP server on 127.0.0.1): entries commit with their resource, survive the indexer
being cancelled mid-request and the store being reopened, and stay pending with a
backoff while the index cannot be reached."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from elasticsearch_fake import FakeElasticsearch
from fhir_server.outbox import Indexer, wait_drained
from fhir_server.storage.base import Context
from fhir_server.storage.outbox_sqlite import SQLiteOutbox
from fhir_server.storage.sqlite import SQLiteStore
from search.elasticsearch_index import ElasticsearchIndex

pytestmark = pytest.mark.anyio
CTX = Context()


def _patient(pid: str, family: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": family}],
        "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{family}</div>'},
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeElasticsearch]:
    server = await FakeElasticsearch().start()
    try:
        yield server
    finally:
        await server.stop()


async def _open(path: Path) -> SQLiteStore:
    return await SQLiteStore.open(path, search_outbox=True)


async def _write(store: SQLiteStore, *resources: dict[str, Any]) -> None:
    for resource in resources:
        async with store.transaction(CTX) as txn:
            await txn.update(resource)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_outbox_rows_commit_and_roll_back_with_the_resource(tmp_path: Path) -> None:
    store = await _open(tmp_path / "fhir.db")
    try:
        await _write(store, _patient("p1", "Chalmers"), _patient("p1", "Chalmers-Smith"))
        with pytest.raises(RuntimeError):
            async with store.transaction(CTX) as txn:
                await txn.update(_patient("p2", "Rolled-Back"))
                raise RuntimeError("the request failed after the write")
        async with store.transaction(CTX) as txn:
            await txn.delete("Patient", "p1")
        rows = store._writer.execute(
            "SELECT tenant, type, id, version, attempts FROM search_outbox ORDER BY seq"
        ).fetchall()
        assert rows == [
            ("default", "Patient", "p1", 1, 0),
            ("default", "Patient", "p1", 2, 0),
            ("default", "Patient", "p1", 3, 0),  # the delete's version
        ]
        assert await SQLiteOutbox(store).pending() == 3
    finally:
        await store.close()


async def test_no_outbox_rows_without_an_external_index(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "fhir.db")
    try:
        await _write(store, _patient("p1", "Chalmers"))
        assert await SQLiteOutbox(store).pending() == 0
    finally:
        await store.close()


async def test_indexer_sends_each_resource_once_at_its_current_version(
    tmp_path: Path, fake: FakeElasticsearch
) -> None:
    store = await _open(tmp_path / "fhir.db")
    index = ElasticsearchIndex.connect(fake.url)
    try:
        await _write(store, _patient("p1", "Chalmers"), _patient("p1", "Chalmers-Smith"),
                     _patient("p2", "Wang"))  # fmt: skip
        async with store.transaction(CTX) as txn:
            await txn.delete("Patient", "p2")
        indexer = Indexer(store, SQLiteOutbox(store), index)
        assert await indexer.drain_once() == 4
        (bulk,) = fake.of("PUT", "/_bulk") + fake.of("POST", "/_bulk")
        actions = bulk.ndjson()
        # p1's two entries coalesce into its current version; p2 is deleted at version 2
        assert actions[0] == {"index": {"_index": "fhir-fusion-default", "_id": "Patient/p1",
                                        "version": 2, "version_type": "external"}}  # fmt: skip
        assert actions[1]["narrative_std"] == "Chalmers-Smith"
        assert actions[2] == {"delete": {"_index": "fhir-fusion-default", "_id": "Patient/p2",
                                         "version": 2, "version_type": "external"}}  # fmt: skip
        assert len(actions) == 3
        assert fake.live() == {"Patient/p1": 2}
        metrics = await indexer.metrics()
        assert (metrics.pending, metrics.applied, metrics.retried) == (0, 2, 0)
    finally:
        await index.close()
        await store.close()


async def test_indexer_cancelled_mid_request_then_restarted_loses_nothing(
    tmp_path: Path, fake: FakeElasticsearch
) -> None:
    path = tmp_path / "fhir.db"
    store = await _open(path)
    await _write(store, *(_patient(f"p{n}", f"Family{n}") for n in range(5)))
    fake.hold_bulk = asyncio.Event()
    index = ElasticsearchIndex.connect(fake.url)
    task = asyncio.create_task(Indexer(store, SQLiteOutbox(store), index).run())
    await asyncio.wait_for(fake.bulk_started.wait(), 10)
    task.cancel()  # the indexer dies while Elasticsearch is applying its bulk request
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await SQLiteOutbox(store).pending() == 5  # nothing was acknowledged
    await index.close()
    await store.close()
    fake.hold_bulk.set()  # Elasticsearch finishes applying what it had received
    await asyncio.sleep(0.05)
    await _write_after_restart(path, fake)


async def _write_after_restart(path: Path, fake: FakeElasticsearch) -> None:
    store = await _open(path)  # the server restarts on the same file
    index = ElasticsearchIndex.connect(fake.url)
    try:
        await _write(store, _patient("p5", "Family5"))
        indexer = Indexer(store, SQLiteOutbox(store), index)
        await wait_drained(indexer)
        assert fake.live() == {f"Patient/p{n}": 1 for n in range(6)}
        assert await SQLiteOutbox(store).pending() == 0
        # the redelivered five were already there: 409 from external versioning, done
        statuses = [r.ndjson() for r in fake.requests if r.path == "/_bulk"]
        assert sum(len(s) for s in statuses) == 2 * 5 + 2 * 6
    finally:
        await index.close()
        await store.close()


async def test_index_unreachable_keeps_entries_pending_with_backoff(
    tmp_path: Path, fake: FakeElasticsearch
) -> None:
    store = await _open(tmp_path / "fhir.db")
    now = [1_000_000.0]
    down = ElasticsearchIndex.connect(f"elasticsearch://127.0.0.1:{_closed_port()}")
    up = ElasticsearchIndex.connect(fake.url)
    try:
        await _write(store, _patient("p1", "Chalmers"), _patient("p2", "Wang"))
        outbox = SQLiteOutbox(store)
        failing = Indexer(store, outbox, down, base_delay=2.0, clock=lambda: now[0])
        assert await failing.drain_once() == 2  # connection refused
        rows = store._writer.execute("SELECT attempts, due, error FROM search_outbox").fetchall()
        assert rows == [(1, now[0] + 2.0, "ConnectionError")] * 2
        assert (await failing.metrics()).pending == 2
        assert await failing.drain_once() == 0  # not due yet
        now[0] += 2.0
        assert await failing.drain_once() == 2  # still down: second backoff is 4 s
        rows = store._writer.execute("SELECT attempts, due FROM search_outbox").fetchall()
        assert rows == [(2, now[0] + 4.0)] * 2
        now[0] += 4.0
        recovered = Indexer(store, outbox, up, clock=lambda: now[0])
        assert await recovered.drain_once() == 2
        assert fake.live() == {"Patient/p1": 1, "Patient/p2": 1}
        assert await outbox.pending() == 0
    finally:
        await down.close()
        await up.close()
        await store.close()


async def test_a_refused_document_is_retried_alone(
    tmp_path: Path, fake: FakeElasticsearch
) -> None:
    store = await _open(tmp_path / "fhir.db")
    now = [0.0]
    index = ElasticsearchIndex.connect(fake.url)
    try:
        await _write(store, _patient("p1", "Chalmers"), _patient("p2", "Wang"))
        fake.fail_ids = {"Patient/p2"}
        indexer = Indexer(store, SQLiteOutbox(store), index, clock=lambda: now[0])
        await indexer.drain_once()
        assert fake.live() == {"Patient/p1": 1}
        rows = store._writer.execute("SELECT id, attempts, error FROM search_outbox").fetchall()
        assert rows == [("p2", 1, "index 503 unavailable_shards_exception")]
        fake.fail_ids = set()
        now[0] += 1.0
        assert await indexer.drain_once() == 1
        assert fake.live() == {"Patient/p1": 1, "Patient/p2": 1}
        assert (await indexer.metrics()).retried == 1
    finally:
        await index.close()
        await store.close()


async def test_a_file_with_an_index_attached_keeps_its_outbox_when_reopened(
    tmp_path: Path, fake: FakeElasticsearch
) -> None:
    from fhir_server import search_index

    path = tmp_path / "fhir.db"
    store = await _open(path)  # a server with --search-index attached the index
    await store.close()
    offline = await SQLiteStore.open(path)  # e.g. `fhir-fusion ingest` beside it
    try:
        assert offline.search_outbox
        await _write(offline, _patient("p1", "Chalmers"))
        assert await SQLiteOutbox(offline).pending() == 1
        assert await search_index.detach_outbox(offline) == 1  # serve without an index
    finally:
        await offline.close()
    plain = await SQLiteStore.open(path)
    try:
        assert not plain.search_outbox
        await _write(plain, _patient("p2", "Wang"))
        assert await SQLiteOutbox(plain).pending() == 0
        running = await search_index.start(plain, fake.url)  # attached again
        try:
            await _write(plain, _patient("p3", "Li"))
            for _ in range(200):
                if fake.live():
                    break
                await asyncio.sleep(0.02)
            assert fake.live() == {"Patient/p3": 1}  # p2 needs a reindex, as documented
            assert (await running.indexer.metrics()).pending == 0
        finally:
            await running.stop()
    finally:
        await plain.close()


async def test_the_running_indexer_reports_pending_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await _open(tmp_path / "fhir.db")
    down = ElasticsearchIndex.connect(f"elasticsearch://127.0.0.1:{_closed_port()}")
    try:
        await _write(store, _patient("p1", "Chalmers"))
        indexer = Indexer(store, SQLiteOutbox(store), down, base_delay=60.0)
        with caplog.at_level("INFO", logger="fhir_server.outbox"):
            task = asyncio.create_task(indexer.run(poll_seconds=0.01, report_seconds=0.05))
            for _ in range(300):
                if any("changes pending" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        messages = [r.getMessage() for r in caplog.records]
        assert "search index: 1 changes pending, 0 applied, 1 retried, last error " \
            "ConnectionError" in messages
        assert "Chalmers" not in " ".join(messages)  # no patient data in the log
    finally:
        await down.close()
        await store.close()
