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

import os
import uuid
from collections.abc import AsyncIterator
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

