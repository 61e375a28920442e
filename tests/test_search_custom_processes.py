"""Two `fhir-fusion serve` processes on one SQLite file agree on custom SearchParameters
(break-new finding 7): one defined and reindexed through one process is searchable
through the other, a resource written through the other carries its index entries, and
a reindex run by either makes a parameter searchable on both. Real processes, real
HTTP, one real SQLite file."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_e2e_process import ServerProcess

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _search_parameter(code: str, expression: str) -> dict[str, Any]:
    return {"resourceType": "SearchParameter", "url": f"http://example.org/sp/{code}",
            "name": code, "status": "active", "code": code, "base": ["Observation"],
            "type": "string", "expression": expression, "description": code}  # fmt: skip


def _observation(note: str, text: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"text": text}, "note": [{"text": note}]}  # fmt: skip


def _reindex(base: str) -> None:
    started = httpx.post(f"{base}/$reindex", params={"type": "Observation"}, timeout=30)
    assert started.status_code == 202, started.text
    for _ in range(600):
        status = httpx.get(started.headers["content-location"], timeout=30)
        if status.status_code == 200:
            return
        assert status.status_code == 202, status.text
        time.sleep(0.05)
    raise AssertionError("the reindex job did not finish")


def _total(base: str, params: dict[str, str]) -> int:
    r = httpx.get(f"{base}/Observation", params={**params, "_total": "accurate"},
                  headers={"Prefer": "handling=strict"}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[str, str]]:
    data = tmp_path / "data"
    first, second = ServerProcess(data), ServerProcess(data)
    try:
        first.start()
        second.start()  # both running before any SearchParameter exists
        yield first.base, second.base
    finally:
        first.stop()
        second.stop()


def test_two_serve_processes_on_one_file_agree_on_custom_parameters(
    two_servers: tuple[str, str],
) -> None:
    s1, s2 = two_servers
    for n in range(3):
        r = httpx.post(f"{s1}/Observation", json=_observation(f"bulkworda {n}", "a"))
        assert r.status_code == 201, r.text
    r = httpx.post(f"{s1}/Observation", json=_observation("other words", "b"))
    assert r.status_code == 201
    r = httpx.post(f"{s1}/SearchParameter", json=_search_parameter(
        "notetext", "Observation.note.text"))  # fmt: skip
    assert r.status_code == 201, r.text
    # pending on both until a reindex: a 400, never every Observation
    for base in (s1, s2):
        r = httpx.get(f"{base}/Observation", params={"notetext": "bulkworda"})
        assert r.status_code == 400 and "not yet indexed" in r.text, r.text
    _reindex(s1)
    assert _total(s1, {"notetext": "bulkworda"}) == 3
    assert _total(s2, {"notetext": "bulkworda"}) == 3  # was 4 (parameter dropped)

    # written through the second process: indexed for the parameter the first defined
    r = httpx.post(f"{s2}/Observation", json=_observation("writtenbys2", "c"))
    assert r.status_code == 201, r.text
    assert _total(s1, {"notetext": "writtenbys2"}) == 1  # was 0

    # defined on one, reindexed on the other: searchable on both
    r = httpx.post(f"{s1}/SearchParameter", json=_search_parameter(
        "codetext", "Observation.code.text"))  # fmt: skip
    assert r.status_code == 201, r.text
    _reindex(s2)
    assert _total(s1, {"codetext": "a"}) == 3
    assert _total(s2, {"codetext": "a"}) == 3


@pytest.mark.anyio
async def test_mongodb_worker_reloads_parameters_another_worker_wrote() -> None:
    """MongoDB API workers cannot share a registry: each reloads it on an interval when
    the stored SearchParameters or their indexed versions changed (registry_sync). The
    other worker is simulated by emptying this process's registry after the write:
    mongomock stands in for a MongoDB server, which cannot run here."""
    import asyncio

    from mongo_async import AsyncMockClient

    from fhir_server.storage import registry_sync
    from fhir_server.storage.base import Context
    from fhir_server.storage.mongodb import MongoStore
    from search import custom

    store = await MongoStore.open("mongodb://mongomock/fhir", client=AsyncMockClient())
    fresh = asyncio.create_task(registry_sync.keep_fresh(store, interval=0.05))
    try:
        await asyncio.sleep(0.1)
        async with store.transaction(Context()) as txn:
            await txn.create(_search_parameter("notetext", "Observation.note.text"), "sp1")
        custom.REGISTRY.replace_all([])  # this worker never saw the write
        for _ in range(100):
            if "notetext" in custom.REGISTRY.of_type("Observation"):
                break
            await asyncio.sleep(0.02)
        assert set(custom.REGISTRY.of_type("Observation")) == {"notetext"}
        assert [p.code for p in custom.REGISTRY.pending()] == ["notetext"]
    finally:
        fresh.cancel()
        await store.close()
        custom.REGISTRY.replace_all([])
