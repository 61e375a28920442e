"""Shared fixtures: a fresh SQLite store per test and an HTTP client on the FHIR app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from rest_examples import patient
from search_graph import RESOURCES

from fhir_server.app import create_app
from fhir_server.storage.sqlite import SQLiteStore

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A store on a new SQLite file in the test's own directory."""
    opened = await SQLiteStore.open(tmp_path / "fhir.db")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def client(store: SQLiteStore) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client speaking to the app in process; URLs are relative to [base]."""
    transport = httpx.ASGITransport(app=create_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://fhir.test/fhir/") as c:
        yield c


@pytest.fixture
async def graph(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The linked resources of tests/search_graph.py, stored through the REST API."""
    for resource in RESOURCES:
        response = await client.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code == 201, response.text
    return client


@pytest.fixture
async def pid(client: httpx.AsyncClient) -> str:
    """The id of a Patient stored through the REST API in two versions (create, update)."""
    created = await client.post("Patient", json=patient())
    assert created.status_code == 201, created.text
    resource_id: str = created.json()["id"]
    changed = patient(id=resource_id, gender="female")
    updated = await client.put(f"Patient/{resource_id}", json=changed)
    assert updated.status_code == 200, updated.text
    return resource_id
