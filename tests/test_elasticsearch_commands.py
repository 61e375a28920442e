"""`fhir-fusion reindex --search-index` and `fhir-fusion serve --search-index` as real
processes, against the recording Elasticsearch stand-in (tests/elasticsearch_fake.py)
served on 127.0.0.1 by the test's own event loop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from elasticsearch_fake import FakeElasticsearch
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio
CLI = [sys.executable, "-m", "fhir_server.cli"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeElasticsearch]:
    server = await FakeElasticsearch().start()
    try:
        yield server
    finally:
        await server.stop()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_FUSION_")}
    return {**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


async def _run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _stored(data: Path, count: int) -> None:
    store = await SQLiteStore.open(data / "fhir-fusion.sqlite3")
    try:
        for n in range(count):
            async with store.transaction(Context()) as txn:
                await txn.update({"resourceType": "Patient", "id": f"p{n}",
                                  "name": [{"family": f"Family{n}"}]})  # fmt: skip
        async with store.transaction(Context()) as txn:
            await txn.delete("Patient", "p0")
    finally:
        await store.close()


async def test_reindex_rebuilds_the_elasticsearch_index(
    tmp_path: Path, fake: FakeElasticsearch
) -> None:
    await _stored(tmp_path, 3)
    code, out, err = await _run(
        "reindex", "--data-dir", str(tmp_path), "--search-index", fake.url
    )
    assert code == 0, err
    assert "reindex job 1 completed: 3 resources" in out
    assert f"search index http://127.0.0.1:{fake.port} rebuilt: 3 resources" in out
    assert fake.live() == {"Patient/p1": 1, "Patient/p2": 1}
    assert fake.docs[("fhir-fusion-default", "Patient/p0")] == (2, None)  # the delete
    # again with --recreate-search-index: the index is dropped and made anew
    code, out, err = await _run("reindex", "--data-dir", str(tmp_path), "--search-index",
                                fake.url, "--recreate-search-index")  # fmt: skip
    assert code == 0, err
    assert len(fake.of("DELETE", "/fhir-fusion-default")) == 1
    assert len(fake.of("PUT", "/fhir-fusion-default")) == 2
    assert fake.live() == {"Patient/p1": 1, "Patient/p2": 1}


async def test_reindex_with_an_unreachable_index_fails_naming_it(tmp_path: Path) -> None:
    await _stored(tmp_path, 1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = await _run("reindex", "--data-dir", str(tmp_path), "--search-index",
                              f"elasticsearch://127.0.0.1:{port}")  # fmt: skip
    assert code == 1
    assert f"Elasticsearch at http://127.0.0.1:{port} cannot be reached" in err
    assert "Traceback" not in err
    code, _, err = await _run("reindex", "--data-dir", str(tmp_path), "--search-index", "es://x")
    assert code == 1 and "es: is not an Elasticsearch URL" in err


async def test_serve_indexes_what_clients_write(tmp_path: Path, fake: FakeElasticsearch) -> None:
    process = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--data-dir", str(tmp_path), "--port", "0", "--mllp-port", "0",
        "--dicom-port", "0",
        "--search-index", fake.url,
        env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        banner = ""
        while "Press Ctrl+C" not in banner:
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, "serve ended before its banner"
            banner += line.decode()
        assert f"Elasticsearch http://127.0.0.1:{fake.port}" in banner
        base = re.search(r"FHIR base\s+(\S+)", banner)
        assert base is not None
        async with httpx.AsyncClient(base_url=base.group(1) + "/") as client:
            created = await client.put("Patient/pe", json={
                "resourceType": "Patient", "id": "pe", "language": "de",
                "text": {"status": "generated", "div":
                         '<div xmlns="http://www.w3.org/1999/xhtml">Bluthochdruck</div>'}})  # fmt: skip
            assert created.status_code == 201, created.text
        # (the shipped terminology's resources, stored by serve's preload a few seconds
        # after start, may reach the index too on a slow machine: only Patients count)
        def patients() -> dict[str, int]:
            return {k: v for k, v in fake.live().items() if k.startswith("Patient/")}

        for _ in range(200):
            if patients():
                break
            await asyncio.sleep(0.05)
        assert patients() == {"Patient/pe": 1}
        lines = [line for r in fake.requests if r.path == "/_bulk" for line in r.ndjson()]
        (document,) = [
            document for action, document in zip(lines[::2], lines[1::2])
            if next(iter(action.values())).get("_id") == "Patient/pe"
        ]
        assert document["narrative_german"] == "Bluthochdruck"
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_offline_ingest_beside_an_attached_index_fills_the_outbox(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "shared" / "samples" / "hl7v2" / (
        "fhirconverter_ADT-A01-01.hl7")  # fmt: skip
    store = await SQLiteStore.open(tmp_path / "fhir-fusion.sqlite3", search_outbox=True)
    await store.close()
    code, out, err = await _run("ingest", "hl7v2", str(sample), "--data-dir", str(tmp_path))
    assert code == 0, err
    store = await SQLiteStore.open(tmp_path / "fhir-fusion.sqlite3")
    try:
        written = store._reader.execute(
            "SELECT count(*) FROM versions WHERE deleted = 0").fetchone()[0]  # fmt: skip
        pending = store._reader.execute(
            "SELECT count(*) FROM search_outbox").fetchone()[0]  # fmt: skip
        assert written > 0
        assert pending == written  # one outbox row per version the ingest wrote
    finally:
        await store.close()


async def test_serve_with_an_unreachable_index_exits_naming_it(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = await _run("serve", "--data-dir", str(tmp_path), "--port", "0",
                              "--mllp-port", "0", "--dicom-port", "0",
                              "--search-index", f"elasticsearch://127.0.0.1:{port}")  # fmt: skip
    assert code == 1
    assert f"Elasticsearch at http://127.0.0.1:{port} cannot be reached" in err
    assert "Traceback" not in err
