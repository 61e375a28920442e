"""Big inputs do not stop the server, and are bounded (break-feeds F1, F4, F9): real
MLLP and HTTP sockets on 127.0.0.1, one event loop as in `fhir-fusion serve`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from adapters.hl7v2.message import parse
from adapters.hl7v2.mllp import frame, start_mllp_server
from adapters.pipeline import Pipeline
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore
from tests.live_server import live_server

CTX = Context(caller="limits-test")
ORU_HEAD = (b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|BIG1|P|2.5\r"
            b"PID|1||77^^^X^MR||Doe^Huge||19800101|M\rOBR|1||ORD1|718-7^Hgb^LN\r")
ADT = (b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|%s|P|2.5\rEVN|A01|20240101\r"
       b"PID|1||%s^^^H^MR||Name^Ann||19800101|F\rPV1|1|I\r")


def oru(observations: int) -> bytes:
    return ORU_HEAD + b"".join(b"OBX|%d|NM|718-7^Hgb^LN||13.%d|g/dL|||||F\r" % (i, i % 10)
                               for i in range(1, observations + 1))


async def send(port: int, message: bytes) -> tuple[str, str, str]:
    """(MSA-1, MSA-2, the ERR segment as text) of the ACK."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frame(message))
    await writer.drain()
    data = await reader.readuntil(b"\x1c\x0d")
    writer.close()
    await writer.wait_closed()
    ack = parse(data[data.index(b"\x0b") + 1:-2])
    msa, err = ack.first("MSA"), ack.first("ERR")
    assert msa is not None
    raw = data.decode()
    err_text = next((s for s in raw.split("\r") if s.startswith("ERR")), "") if err else ""
    return msa.get(1), msa.get(2), err_text


def test_other_connections_are_served_while_a_big_message_is_parsed(tmp_path: Path) -> None:
    async def main() -> None:
        async with live_server(tmp_path) as (url, store):
            # a cap above the big message, so that it is parsed and stored, not refused
            server = await start_mllp_server(Pipeline(store, max_resources=10_000), CTX,
                                             "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            # first use loads the translator's modules and tables: not what is measured here
            assert (await send(port, ADT % (b"WARM1", b"WARM")))[:2] == ("AA", "WARM1")
            done: list[str] = []

            async def big() -> tuple[str, str, str]:
                # 6,000 OBX: parsing and translating it takes most of a second even on an
                # idle machine (its store step, on the loop, comes after)
                ack = await send(port, oru(6000))
                done.append("big")
                return ack

            async def small() -> None:
                await asyncio.sleep(0.1)  # the big one is being parsed by now
                async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                    response = await client.get("/fhir/Patient", params={"identifier": "WARM"})
                assert response.status_code == 200 and response.json()["total"] == 1
                done.append("http")
                assert (await send(port, ADT % (b"SMALL1", b"SM1")))[:2] == ("AA", "SMALL1")
                done.append("mllp")

            big_task = asyncio.create_task(big())
            await small()
            assert (await big_task)[:2] == ("AA", "BIG1")
            server.close()
            await server.wait_closed()
            # the HTTP read and the small message were answered while the big one was parsed
            assert done == ["http", "mllp", "big"]
            (stored,) = await store.list_inputs(CTX, status="stored", limit=1)
            assert parse(stored.content).control_id == "BIG1"

    asyncio.run(asyncio.wait_for(main(), 180))


def with_listener(db: Path, max_resources: int, scenario) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        store = await SQLiteStore.open(db)
        server = await start_mllp_server(Pipeline(store, max_resources=max_resources), CTX,
                                         "127.0.0.1", 0)
        try:
            await scenario(store, server.sockets[0].getsockname()[1])
        finally:
            server.close()
            await server.wait_closed()
            await store.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_message_with_more_segments_than_the_cap_is_refused_and_kept(tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        code, control, err = await send(port, oru(60))
        assert (code, control) == ("AE", "BIG1")
        assert "63 segments" in err and "at most 50" in err
        (kept,) = await store.list_inputs(CTX, status="rejected")
        assert kept.content == oru(60) and "at most 50" in (kept.reason or "")
        assert not await store.list_inputs(CTX, status="stored")

    with_listener(tmp_path / "db.sqlite3", 50, scenario)


def test_a_field_repeated_past_the_cap_is_refused_naming_it(tmp_path: Path) -> None:
    ids = b"~".join(b"X%d^^^HOSP^MR" % i for i in range(60))
    message = ADT.replace(b"%s^^^H^MR", ids) % b"REP1"

    async def scenario(store: SQLiteStore, port: int) -> None:
        code, control, err = await send(port, message)
        assert (code, control) == ("AE", "REP1")
        assert err.split("|")[2] == "PID^1^3^1"  # ERR-2: PID-3
        assert len(await store.list_inputs(CTX, status="rejected")) == 1

    with_listener(tmp_path / "db.sqlite3", 50, scenario)


def test_two_messages_in_one_frame_are_refused_naming_the_second(tmp_path: Path) -> None:
    both = ADT % (b"TRE1", b"TREA") + ADT % (b"TRE2", b"TREB")

    async def scenario(store: SQLiteStore, port: int) -> None:
        code, control, err = await send(port, both)
        assert (code, control) == ("AE", "TRE1")
        assert "'TRE2'" in err and "segment 5" in err
        (kept,) = await store.list_inputs(CTX, status="rejected")
        assert kept.content == both  # nothing lost: both messages are in the dead letter
        assert not await store.list_inputs(CTX, status="stored")

    with_listener(tmp_path / "db.sqlite3", 2000, scenario)


def test_the_pipeline_refuses_an_input_making_more_resources_than_its_cap(
        tmp_path: Path) -> None:
    async def main() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        try:
            result = await Pipeline(store, max_resources=2).ingest(
                CTX, "hl7v2", oru(3))  # Patient, ServiceRequest/DiagnosticReport, 3 OBX
            assert result.status == "rejected"
            assert "at most 2 per input" in (result.reason or "")
            assert not await store.list_inputs(CTX, status="stored")
        finally:
            await store.close()

    asyncio.run(main())
