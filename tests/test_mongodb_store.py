"""The MongoDB store beyond the shared contract: outages, standalone servers, start-up,
the layout of its documents. Through mongomock (tests/mongo_async.py): the outage is
emulated by the facade failing every call, as an unreachable server does."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mongo_async import AsyncMockClient

from fhir_server.app import create_app
from fhir_server.config import ConfigError, resolve_serve_config
from fhir_server.storage import mongodb_documents as docs
from fhir_server.storage.base import Context
from fhir_server.storage.mongodb import MongoStore, StoreUnavailable, describe_address

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
PATIENT = {"resourceType": "Patient", "gender": "female"}


async def _app(client: AsyncMockClient) -> tuple[MongoStore, httpx.AsyncClient]:
    store = await MongoStore.open("mongodb://mongomock/fhir", client=client)
    transport = httpx.ASGITransport(app=create_app(store))
    return store, httpx.AsyncClient(transport=transport, base_url="http://fhir.test/fhir/")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_outage_is_503_and_the_server_recovers_by_itself() -> None:
    mock = AsyncMockClient()
    store, http = await _app(mock)
    async with http:
        created = await http.post("Patient", json=PATIENT)
        assert created.status_code == 201
        pid = created.json()["id"]
        mock.down = True
        for response in (await http.get(f"Patient/{pid}"), await http.post("Patient", json=PATIENT),
                         await http.get("Patient/_history")):
            assert response.status_code == 503, response.text
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["code"] == "transient"
            assert "MongoDB database is unavailable" in outcome["issue"][0]["diagnostics"]
        mock.down = False
        back = await http.get(f"Patient/{pid}")
        assert back.status_code == 200 and back.json()["gender"] == "female"
        assert (await http.post("Patient", json=PATIENT)).status_code == 201


async def test_an_outage_mid_transaction_leaves_no_half_written_bundle() -> None:
    mock = AsyncMockClient()
    store, http = await _app(mock)
    bundle = {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:0000000{n}-0000-4000-8000-000000000000",
             "resource": PATIENT,
             "request": {"method": "POST", "url": "Patient"}}
            for n in range(4)
        ],
    }
    async with http:
        # enough calls for the transaction to begin writing, not enough to commit
        mock.fail_after(12)
        response = await http.post("http://fhir.test/fhir", json=bundle)
        assert response.status_code == 503, response.text
        assert mock.down and mock.writes >= 2  # it had written resources when the server went
        mock.down = False
        assert (await store.history(Context(), "Patient"))[1] == 0
        assert mock.sync["fhir"][docs.RESOURCES].count_documents({}) == 0
        assert (await http.post("http://fhir.test/fhir", json=bundle)).status_code == 200
        assert (await store.history(Context(), "Patient"))[1] == 4


async def test_a_standalone_server_refuses_writes_and_still_reads() -> None:
    mock = AsyncMockClient(replica_set=False)
    store, http = await _app(mock)
    assert not store.supports_transactions
    async with http:
        refused = await http.post("Patient", json=PATIENT)
        assert refused.status_code == 501
        text = refused.json()["issue"][0]["diagnostics"]
        assert "standalone MongoDB server" in text and "replica set" in text
        assert (await http.get("Patient/nobody")).status_code == 404


async def test_documents_carry_tenant_compartment_and_index() -> None:
    mock = AsyncMockClient()
    store = await MongoStore.open("mongodb://mongomock/fhir", client=mock)
    ctx = Context(tenant="north")
    async with store.transaction(ctx) as txn:
        await txn.create({"resourceType": "Patient", "gender": "male"}, "p1")
        await txn.create({"resourceType": "Observation", "status": "final",
                          "code": {"text": "glucose"},
                          "subject": {"reference": "Patient/p1"}}, "o1")
    raw = mock.sync["fhir"]
    observation = raw[docs.RESOURCES].find_one({"id": "o1"})
    assert (observation["tenant"], observation["type"], observation["pc"]) == (
        "north", "Observation", "p1")
    assert raw[docs.RESOURCES].find_one({"id": "p1"})["pc"] == "p1"
    assert raw[docs.HISTORY].find_one({"id": "o1"})["_id"] == "north/Observation/o1/1"
    indexes = raw[docs.RESOURCES].index_information()
    assert indexes["by_type_id"]["unique"] is True
    # opening again finds the indexes there and keeps them (idempotent start-up)
    again = await MongoStore.open("mongodb://mongomock/fhir", client=mock)
    assert again._clock.now() > (await store.read(ctx, "Observation", "o1")).last_updated
    assert raw[docs.RESOURCES].index_information().keys() == indexes.keys()


async def test_an_unreachable_url_fails_fast_naming_mongodb_and_the_address() -> None:
    port = _closed_port()
    url = f"mongodb://127.0.0.1:{port}/fhir?serverSelectionTimeoutMS=500"
    with pytest.raises(StoreUnavailable, match=rf"MongoDB at 127\.0\.0\.1:{port}"):
        await MongoStore.open(url)
    assert describe_address("mongodb://user:secret@db1:27017,db2/fhir") == "db1:27017,db2"


def test_serve_with_an_unreachable_store_exits_non_zero_within_30_seconds(
    tmp_path: Path,
) -> None:
    """With the default server selection timeout (10 s): the store is never half-alive."""
    port = _closed_port()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "fhir_server.cli", "serve", "--port", "0", "--mllp-port", "0",
         "--data-dir", str(tmp_path), "--store", f"mongodb://127.0.0.1:{port}/fhir"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    assert f"cannot use MongoDB at 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_store_setting_takes_a_mongodb_url_from_the_environment() -> None:
    config = resolve_serve_config({}, {"FHIR_FUSION_STORE": "mongodb://db:27017/fhir"})
    assert config.store == "mongodb://db:27017/fhir"
    assert resolve_serve_config({}, {}).store is None
    with pytest.raises(ConfigError, match="FHIR_FUSION_STORE.*not a MongoDB URL"):
        resolve_serve_config({}, {"FHIR_FUSION_STORE": "postgres://db/fhir"})


async def test_a_locked_sqlite_database_is_503_until_it_is_free(tmp_path: Path) -> None:
    """The same rule on the embedded store: another process holding the write lock past
    the busy timeout is a 503, and the next request after it lets go succeeds."""
    import sqlite3

    from fhir_server.errors import FHIRError
    from fhir_server.storage.sqlite import SQLiteStore

    store = await SQLiteStore.open(tmp_path / "fhir.db")
    try:
        store._writer.execute("PRAGMA busy_timeout=50")
        other = sqlite3.connect(tmp_path / "fhir.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(FHIRError) as caught:
            async with store.transaction(Context()) as txn:
                await txn.create(dict(PATIENT), "p1")
        assert caught.value.status == 503
        assert "SQLite database is unavailable (database is locked)" in str(caught.value)
        other.execute("ROLLBACK")
        other.close()
        async with store.transaction(Context()) as txn:
            assert (await txn.create(dict(PATIENT), "p1")).outcome == "created"
    finally:
        await store.close()


async def test_claims_in_opposite_orders_do_not_wait_for_each_other_for_long() -> None:
    """Two transactions each holding one claim and wanting the other's: the one asking
    while it holds a claim gives up after a short wait (503, retry), so the other goes on."""
    from fhir_server.errors import FHIRError

    store = await MongoStore.open("mongodb://mongomock/fhir", client=AsyncMockClient())
    first_holds = asyncio.Event()
    second_holds = asyncio.Event()
    outcomes: list[str] = []

    async def bundle(mine: str, theirs: str, holds: asyncio.Event, other: asyncio.Event) -> None:
        try:
            async with store.transaction(Context()) as txn:
                await txn.claim("Patient", mine)
                holds.set()
                await other.wait()
                await txn.claim("Patient", theirs)
            outcomes.append("committed")
        except FHIRError as exc:
            outcomes.append(f"{exc.status}")

    started = time.monotonic()
    await asyncio.gather(bundle("Patient?identifier=a", "Patient?identifier=b", first_holds,
                                second_holds),
                         bundle("Patient?identifier=b", "Patient?identifier=a", second_holds,
                                first_holds))
    assert sorted(outcomes) == ["503", "committed"]
    assert time.monotonic() - started < 10


async def test_reindex_makes_a_new_search_parameter_find_older_resources() -> None:
    from fhir_server.storage import mongodb_reindex
    from search import custom
    from search.query import parse_search

    birthsex = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"
    definition = {
        "resourceType": "SearchParameter", "id": "patient-birthsex", "status": "active",
        "url": "http://example.org/fhir/SearchParameter/patient-birthsex", "name": "birthsex",
        "description": "Birth sex", "code": "birthsex", "base": ["Patient"], "type": "token",
        "expression": f"Patient.extension.where(url='{birthsex}').value",
    }
    mock = AsyncMockClient()
    store = await MongoStore.open("mongodb://mongomock/fhir", client=mock)
    ctx = Context()
    try:
        async with store.transaction(ctx) as txn:
            for n, sex in enumerate("FMF"):
                await txn.create({"resourceType": "Patient",
                                  "extension": [{"url": birthsex, "valueCode": sex}]}, f"old{n}")
            await txn.create(definition, definition["id"])
        seen: list[tuple[int, int]] = []
        done = await mongodb_reindex.reindex(store.db, ctx, ("Patient",), batch=2,
                                             progress=lambda n, total: seen.append((n, total)))
        assert done == 3 and seen == [(2, 3), (3, 3)]
        page = await store.search(ctx, parse_search("Patient", [("birthsex", "F")]))
        assert sorted(r.id for r in page.resources) == ["old0", "old2"]
        # a restart reads which version was indexed: still searchable
        again = await MongoStore.open("mongodb://mongomock/fhir", client=mock)
        page = await again.search(ctx, parse_search("Patient", [("birthsex", "M")]))
        assert [r.id for r in page.resources] == ["old1"]
    finally:
        custom.REGISTRY.replace_all([])


async def test_the_reindex_command_runs_on_the_mongodb_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fhir-fusion reindex` with FHIR_FUSION_STORE set: the MongoDB store is opened (here
    on mongomock in place of a server) and its index entries rebuilt."""
    from fhir_server import cli

    mock = AsyncMockClient()
    seeded = await MongoStore.open("mongodb://mongomock/fhir", client=mock)
    async with seeded.transaction(Context()) as txn:
        await txn.create(dict(PATIENT), "p1")
        await txn.create(dict(PATIENT), "p2")

    async def open_mock(url: str) -> MongoStore:
        assert url == "mongodb://mongomock/fhir"
        return await MongoStore.open(url, client=mock)

    monkeypatch.setenv("FHIR_FUSION_STORE", "mongodb://mongomock/fhir")
    monkeypatch.setattr(cli, "_open_mongodb", open_mock)
    assert await cli.reindex_store(tmp_path, ()) == 0
    assert "reindex job 1 completed: 2 resources" in capsys.readouterr().out
