"""Several indexers draining one search-index outbox (fhir_server.outbox, leases):
every entry is delivered, none twice while its lease holds, and a crashed indexer's
entries are taken over once its lease runs out.

SQLite: a real file, drained by two separate processes and the test process at once.
MongoDB: through tests/mongo_async.py (mongomock; no MongoDB server can run in CI):
the claim's filters and its update-then-read-back are evaluated by mongomock, and
indexers interleave at each awaited call; the real server's per-document atomicity
of update_many, which the claim relies on, is not exercised here.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_server.outbox import Indexer, Outbox
from fhir_server.storage.base import Context, ResourceStore
from fhir_server.storage.mongodb import MongoStore
from fhir_server.storage.outbox_mongo import MongoOutbox
from fhir_server.storage.outbox_sqlite import SQLiteOutbox
from fhir_server.storage.sqlite import SQLiteStore
from mongo_async import AsyncMockClient
from outbox_drainers import RecordingIndex

pytestmark = pytest.mark.anyio
CTX = Context()
DRAINER = Path(__file__).resolve().parent / "outbox_drainers.py"


def _patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": "Chalmers"}]}


async def _write(store: ResourceStore, count: int, prefix: str = "p") -> None:
    for n in range(count):
        async with store.transaction(CTX) as txn:
            await txn.update(_patient(f"{prefix}{n}"))


# -- one outbox, two workers: a factory per backend --------------------------------------

Workers = Callable[[Path], Awaitable[tuple[list[ResourceStore], list[Outbox]]]]


async def _sqlite_workers(tmp_path: Path) -> tuple[list[ResourceStore], list[Outbox]]:
    # two stores on one file: two connections, as two processes would have
    first = await SQLiteStore.open(tmp_path / "fhir.db", search_outbox=True)
    second = await SQLiteStore.open(tmp_path / "fhir.db")
    return [first, second], [SQLiteOutbox(first), SQLiteOutbox(second)]


async def _mongo_workers(tmp_path: Path) -> tuple[list[ResourceStore], list[Outbox]]:
    client = AsyncMockClient()  # one database, two API workers
    stores = [await MongoStore.open("mongodb://127.0.0.1:1/fhir", client=client)
              for _ in range(2)]  # fmt: skip
    return list(stores), [await MongoOutbox.enable(store) for store in stores]


@pytest.fixture(params=["sqlite", "mongodb"])
async def workers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[list[ResourceStore], list[Outbox]]]:
    make: Workers = _sqlite_workers if request.param == "sqlite" else _mongo_workers
    stores, outboxes = await make(tmp_path)
    try:
        yield stores, outboxes
    finally:
        for store in stores:
            await store.close()


async def test_concurrent_indexers_deliver_every_entry_once(
    workers: tuple[list[ResourceStore], list[Outbox]],
) -> None:
    stores, outboxes = workers
    await _write(stores[0], 40)
    index = RecordingIndex(delay=0.005)  # each bulk call overlaps the other's claims
    indexers = [Indexer(store, outbox, index, batch_size=6)  # type: ignore[arg-type]
                for store, outbox in zip(stores, outboxes, strict=True)]  # fmt: skip
    taken = [0, 0]

    async def drain(n: int) -> None:
        while batch := await indexers[n].drain_once():
            taken[n] += batch

    # without leases the two would take the same entries over and over: bounded
    await asyncio.wait_for(asyncio.gather(drain(0), drain(1)), 60)
    delivered = Counter(key for _, key, _ in index.delivered)
    assert delivered == Counter({f"Patient/p{n}": 1 for n in range(40)})
    assert taken[0] > 0 and taken[1] > 0  # both worked: the batches were shared out
    assert taken[0] + taken[1] == 40
    assert await outboxes[0].pending() == 0
    assert indexers[0].lost_leases == indexers[1].lost_leases == 0


async def test_a_crashed_indexers_lease_runs_out_and_another_delivers(
    workers: tuple[list[ResourceStore], list[Outbox]],
) -> None:
    stores, outboxes = workers
    await _write(stores[0], 3)
    now = 1_000_000.0
    claimed = await outboxes[0].claim(now, limit=10, lease_seconds=30.0)
    assert [e.id for e in claimed] == ["p0", "p1", "p2"]  # then the worker is killed
    index = RecordingIndex()
    survivor = Indexer(stores[1], outboxes[1], index, lease_seconds=30.0,  # type: ignore[arg-type]
                       clock=lambda: clock[0])  # fmt: skip
    clock = [now + 29.0]
    assert await survivor.drain_once() == 0  # the lease still holds: nothing is sent
    assert index.delivered == []
    clock[0] = now + 30.0
    assert await survivor.drain_once() == 3  # run out: taken over and delivered
    assert sorted(key for _, key, _ in index.delivered) == ["Patient/p0", "Patient/p1",
                                                            "Patient/p2"]  # fmt: skip
    assert await outboxes[1].pending() == 0
    # the dead worker's claim no longer owns anything: it can neither remove nor reschedule
    assert await outboxes[0].done(claimed) == 0
    assert await outboxes[0].retry_later(claimed, now + 60.0, "Late") == 0


async def test_a_slow_indexer_past_its_lease_cannot_finish_what_was_taken_over(
    workers: tuple[list[ResourceStore], list[Outbox]],
) -> None:
    stores, outboxes = workers
    await _write(stores[0], 2)
    slow_index, fast_index = RecordingIndex(), RecordingIndex()
    slow_index.gate = asyncio.Event()
    slow = Indexer(stores[0], outboxes[0], slow_index, lease_seconds=10.0,  # type: ignore[arg-type]
                   clock=lambda: 500.0)  # fmt: skip
    fast = Indexer(stores[1], outboxes[1], fast_index, lease_seconds=10.0,  # type: ignore[arg-type]
                   clock=lambda: 511.0)  # fmt: skip
    stuck = asyncio.create_task(slow.drain_once())
    await asyncio.wait_for(slow_index.started.wait(), 10)  # claimed, now inside the bulk call
    assert await fast.drain_once() == 2  # 11 s later: the lease ran out, taken over
    await _write(stores[0], 1, prefix="q")  # a new entry, due now, not the slow one's
    slow_index.gate.set()
    assert await stuck == 2
    assert slow.lost_leases == 2  # its done() was refused: the entries were not its own
    assert fast.lost_leases == 0
    assert [e.id for e in await _peek(outboxes[0], 1e12)] == ["q0"]


async def _peek(outbox: Outbox, now: float) -> list[Any]:
    return await outbox.due(now, 100)  # type: ignore[attr-defined, no-any-return]


async def test_a_stopped_indexer_hands_its_entries_back_at_once(
    workers: tuple[list[ResourceStore], list[Outbox]],
) -> None:
    stores, outboxes = workers
    await _write(stores[0], 2)
    index = RecordingIndex()
    index.gate = asyncio.Event()  # the bulk request never answers
    indexer = Indexer(stores[0], outboxes[0], index)  # type: ignore[arg-type]
    task = asyncio.create_task(indexer.drain_once())
    await asyncio.wait_for(index.started.wait(), 10)
    task.cancel()  # shutdown while Elasticsearch is busy
    with pytest.raises(asyncio.CancelledError):
        await task
    # due again now, not after the 60 s lease, and not counted as a failed attempt
    entries = await outboxes[1].claim(0.0, 10, 60.0)
    assert [(e.id, e.attempts) for e in entries] == [("p0", 0), ("p1", 0)]


# -- MongoDB: the race inside a claim -----------------------------------------------------


async def test_mongodb_claim_loses_a_raced_candidate_and_takes_the_next(tmp_path: Path) -> None:
    stores, outboxes = await _mongo_workers(tmp_path)
    first, second = outboxes
    assert isinstance(first, MongoOutbox)
    try:
        await _write(stores[0], 4)
        # the first worker has found its candidates; before it updates them, the
        # second worker claims two of them
        candidates = await first._candidates(100.0, 2)
        won = await second.claim(100.0, 2, 30.0)
        assert [e.id for e in won] == ["p0", "p1"]
        assert await first._take(candidates, 100.0, 130.0, "first-token") == []
        # the whole claim looks again and takes the next ones
        rest = await first.claim(100.0, 2, 30.0)
        assert [e.id for e in rest] == ["p2", "p3"]
        assert {e.owner for e in won}.isdisjoint({e.owner for e in rest})
        mongo = stores[0]
        assert isinstance(mongo, MongoStore)
        documents = await mongo.db["outbox"].find({}).sort("_id").to_list(None)
        assert [(d["id"], d["due"]) for d in documents] == [
            ("p0", 130.0), ("p1", 130.0), ("p2", 130.0), ("p3", 130.0)]  # fmt: skip
    finally:
        for store in stores:
            await store.close()


# -- SQLite: separate processes on one file -----------------------------------------------


async def test_sqlite_processes_share_one_outbox(tmp_path: Path) -> None:
    db = tmp_path / "fhir.db"
    store = await SQLiteStore.open(db, search_outbox=True)
    try:
        await _write(store, 120)
    finally:
        await store.close()
    logs = [tmp_path / f"drained-{n}.log" for n in range(2)]
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(DRAINER), str(db), str(log),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        for log in logs
    ]
    try:
        for process in processes:  # both have the file open before either drains
            assert process.stdout is not None
            assert await asyncio.wait_for(process.stdout.readline(), 60) == b"ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        for process in processes:
            assert await asyncio.wait_for(process.wait(), 120) == 0
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    per_process = [log.read_text().splitlines() if log.exists() else [] for log in logs]
    delivered = Counter(line.split()[1] for lines in per_process for line in lines)
    assert delivered == Counter({f"Patient/p{n}": 1 for n in range(120)})
    assert all(per_process), "each process delivered a share"
    reopened = await SQLiteStore.open(db)
    try:
        assert await SQLiteOutbox(reopened).pending() == 0
    finally:
        await reopened.close()


async def test_sqlite_file_from_before_leases_gets_its_owner_column(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "fhir.db", search_outbox=True)
    try:
        # the table as files made before leases have it
        store._writer.executescript("""
            DROP TABLE search_outbox;
            CREATE TABLE search_outbox (
                seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL, type TEXT NOT NULL,
                id TEXT NOT NULL, version INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, due REAL NOT NULL DEFAULT 0, error TEXT);
            CREATE INDEX search_outbox_due ON search_outbox (due, seq);
        """)
        await _write(store, 1)
        outbox = SQLiteOutbox(store)
        (entry,) = await outbox.claim(0.0, 10, 60.0)
        assert await outbox.done([entry]) == 1
        columns = [row[1] for row in store._writer.execute("PRAGMA table_info(search_outbox)")]
        assert columns[-1] == "owner"
    finally:
        await store.close()
