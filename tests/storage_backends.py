"""The storage backends the contract suite runs against, as one parametrised fixture.

- sqlite: a real SQLite file in the test's directory.
- mongomock: the MongoDB store on tests/mongo_async.py (mongomock behind an async
  facade; transactions emulated on private copies of the collections they write, so
  others read only committed data; write locks for first-writer-wins conflicts).
- mongodb: the MongoDB store on a real server, only when FHIR_FUSION_TEST_MONGODB
  holds its URL (a replica set, so that transactions run); each test gets a database
  of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mongo_async import AsyncMockClient

from fhir_server.storage.mongodb import MongoStore
from fhir_server.storage.sqlite import SQLiteStore

REAL_MONGODB = os.environ.get("FHIR_FUSION_TEST_MONGODB")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("mongomock", id="mongomock"),
    pytest.param(
        "mongodb",
        id="mongodb",
        marks=pytest.mark.skipif(
            not REAL_MONGODB, reason="FHIR_FUSION_TEST_MONGODB names no MongoDB server"
        ),
    ),
]


async def open_backend(kind: str, tmp_path: Path) -> tuple[Any, Any]:
    """The store, and a cleanup token (the real database's name)."""
    if kind == "sqlite":
        return await SQLiteStore.open(tmp_path / "fhir.db"), None
    if kind == "mongomock":
        return await MongoStore.open("mongodb://mongomock/", client=AsyncMockClient()), None
    assert REAL_MONGODB is not None
    name = f"fhir_fusion_test_{uuid.uuid4().hex[:12]}"
    return await MongoStore.open(REAL_MONGODB, database=name), name


async def close_backend(store: Any, token: Any) -> None:
    if token is not None:
        await store.client.drop_database(token)
    await store.close()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    store, token = await open_backend(request.param, tmp_path)
    try:
        yield store
    finally:
        await close_backend(store, token)



def emulated_outage(store: Any) -> AsyncMockClient | None:
    """The facade under `store` when it runs on mongomock: its `fail_after` and `down`
    take the database away mid-request. SQLite and a real server have no such switch."""
    client = getattr(store, "client", None)
    return client if isinstance(client, AsyncMockClient) else None


class PausingStore:
    """`store`, with transactions that stop after their `after`-th write (create, update
    or delete) until `resume` is set: a seam for looking at the store from another task
    while a transaction is open between two writes. Everything else is the store's."""

    def __init__(self, store: Any, after: int) -> None:
        self._store = store
        self.after = after
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @asynccontextmanager
    async def transaction(self, ctx: Any) -> AsyncIterator[_PausingTransaction]:
        async with self._store.transaction(ctx) as txn:
            yield _PausingTransaction(txn, self)


class _PausingTransaction:
    def __init__(self, txn: Any, store: PausingStore) -> None:
        self._txn = txn
        self._store = store
        self._writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)

    async def _wrote(self, result: Any) -> Any:
        self._writes += 1
        if self._writes == self._store.after:
            self._store.paused.set()
            await self._store.resume.wait()
        return result

    async def create(self, *args: Any, **kwargs: Any) -> Any:
        return await self._wrote(await self._txn.create(*args, **kwargs))

    async def update(self, *args: Any, **kwargs: Any) -> Any:
        return await self._wrote(await self._txn.update(*args, **kwargs))

    async def delete(self, *args: Any, **kwargs: Any) -> Any:
        return await self._wrote(await self._txn.delete(*args, **kwargs))
