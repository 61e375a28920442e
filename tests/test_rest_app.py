"""The app factory: a store opened by the app at startup and closed at shutdown."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from fhir_server.app import create_app
from fhir_server.storage.base import Context, ResourceStore
from fhir_server.storage.sqlite import SQLiteStore


@pytest.mark.anyio
async def test_store_factory_opens_at_startup_and_closes_at_shutdown(tmp_path: Path) -> None:
    opened: list[ResourceStore] = []

    async def open_store() -> ResourceStore:
        store = await SQLiteStore.open(tmp_path / "app.db")
        opened.append(store)
        return store

    app = create_app(store_factory=open_store, base_path="/r4")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            created = await client.post("/r4/Patient", json={"resourceType": "Patient"})
            assert created.status_code == 201
            assert created.headers["location"].startswith("http://testserver/r4/Patient/")
            assert (await client.get(created.headers["location"])).status_code == 200

    assert len(opened) == 1
    with pytest.raises(sqlite3.ProgrammingError):  # closed at shutdown
        await opened[0].read(Context(), "Patient", "x")


def test_create_app_needs_exactly_one_store_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        create_app()
