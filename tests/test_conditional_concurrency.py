"""Conditional create under concurrency: the same If-None-Exist POST fired 50 times at
once makes exactly one resource (R4 http.html#ccreate), on both backends. SQLite is
served by uvicorn on a real socket; MongoDB runs through mongomock (tests/mongo_async.py),
whose emulated transactions make a second claim of the same criteria wait, as a real
server's write conflicts would, so the claim logic runs for real but the isolation of a
real server is not what is tested there (FHIR_FUSION_TEST_MONGODB runs it on one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from storage_backends import BACKENDS, close_backend, open_backend

from fhir_server.app import create_app
from fhir_server.storage.base import Context

pytestmark = pytest.mark.anyio

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
    "name": [{"family": "Chalmers", "given": ["Peter"]}],
}
CRITERIA = "identifier=urn:oid:1.2.36.146.595.217.0.1|12345"


@pytest.fixture
async def http_server(tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    """The FHIR app on the SQLite store, served by uvicorn on an ephemeral port."""
    store, token = await open_backend("sqlite", tmp_path)
    server = uvicorn.Server(uvicorn.Config(
        create_app(store), host="127.0.0.1", port=0, log_config=None, access_log=False,
        lifespan="on",
    ))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/fhir/", store
    finally:
        server.should_exit = True
        await serving
        await close_backend(store, token)


async def _fire(client: httpx.AsyncClient, times: int) -> list[httpx.Response]:
    async def post() -> httpx.Response:
        return await client.post("Patient", json=PATIENT, headers={"If-None-Exist": CRITERIA})

    return list(await asyncio.gather(*(post() for _ in range(times))))


def _check(responses: list[httpx.Response]) -> None:
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 49 + [201], [r.text for r in responses if r.status_code >= 300]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1


async def test_fifty_parallel_conditional_creates_over_http_make_one_patient(
    http_server: tuple[str, Any],
) -> None:
    base, store = http_server
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        responses = await _fire(client, 50)
        _check(responses)
        found = await client.get("Patient", params={"identifier": CRITERIA.split("=", 1)[1]})
    assert found.json()["total"] == 1
    assert (await store.history(Context(), "Patient"))[1] == 1


@pytest.mark.parametrize("kind", [p for p in BACKENDS if p.id != "sqlite"])
async def test_fifty_parallel_conditional_creates_on_mongodb_make_one_patient(
    kind: str, tmp_path: Path
) -> None:
    store, token = await open_backend(kind, tmp_path)
    try:
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://fhir.test/fhir/") as c:
            _check(await _fire(c, 50))
        assert (await store.history(Context(), "Patient"))[1] == 1
    finally:
        await close_backend(store, token)
