"""MLLP block ends (break-feeds F32): only 0x1C 0x0D ends a frame; a lone 0x1C in the
content no longer cuts the message into an acknowledged fragment."""

from __future__ import annotations

import asyncio
from pathlib import Path

from adapters.hl7v2.mllp import FrameReader, start_mllp_server
from adapters.pipeline import Pipeline
from fhir_server.storage.sqlite import SQLiteStore
from tests.test_feeds_limits import CTX, send

MESSAGE = (b"MSH|^~\\&|LAB|HOSP|R|RF|20240101||ORU^R01|FS1|P|2.5\r"
           b"PID|1||FSP^^^H^MR||Fs^Ann||19800101|F\r"
           b"OBR|1|PL|FS-FILL|2345-7^Glu^LN|||20240101\r"
           b"OBX|1|TX|2345-7^Glu^LN||note with \x1c inside||||||F\r")


def test_the_end_block_split_over_two_reads_still_ends_the_frame() -> None:
    frames = FrameReader(1 << 20)
    assert frames.feed(b"\x0bMSH|^~\\&|A\x1c") == []
    assert frames.feed(b"\r\x0bMSH|^~\\&|B\x1c\r") == [b"MSH|^~\\&|A", b"MSH|^~\\&|B"]
    assert frames.feed(b"\x0bX\x1cY\x1c\r") == [b"X\x1cY"]  # a lone 0x1C is content


def test_a_lone_file_separator_inside_a_message_is_not_acknowledged_aa(
        tmp_path: Path) -> None:
    async def main() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        server = await start_mllp_server(Pipeline(store), CTX, "127.0.0.1", 0)
        try:
            code, control, _ = await send(server.sockets[0].getsockname()[1], MESSAGE)
            assert (code, control) == ("AE", "FS1")
            (kept,) = await store.list_inputs(CTX, status="rejected")
            assert kept.content == MESSAGE  # whole, not cut at the 0x1C
            assert not await store.list_inputs(CTX, status="stored")
        finally:
            server.close()
            await server.wait_closed()
            await store.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_an_inbound_acknowledgement_is_kept_and_not_acknowledged(tmp_path: Path) -> None:
    ack = b"MSH|^~\\&|A|B|C|D|20240101||ACK^A01|ACK1|P|2.5\rMSA|AA|X1\r"
    adt = (b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|AFTER1|P|2.5\rEVN|A01|20240101\r"
           b"PID|1||AK1^^^H^MR||Name^Ann||19800101|F\rPV1|1|I\r")

    async def main() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        server = await start_mllp_server(Pipeline(store), CTX, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.sockets[0].getsockname()[1])
            writer.write(b"\x0b" + ack + b"\x1c\r" + b"\x0b" + adt + b"\x1c\r")
            await writer.drain()
            # the first answer on the connection is the ADT's: the ACK got none
            data = await reader.readuntil(b"\x1c\r")
            assert b"MSA|AA|AFTER1" in data
            writer.close()
            await writer.wait_closed()
            (kept,) = await store.list_inputs(CTX, status="rejected")
            assert kept.content == ack and "not acknowledged" in (kept.reason or "")
        finally:
            server.close()
            await server.wait_closed()
            await store.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_message_being_stored_at_shutdown_is_committed_and_acked(tmp_path: Path) -> None:
    from adapters.hl7v2.mllp import finish_messages
    from tests.test_feeds_limits import oru

    async def main() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        server = await start_mllp_server(Pipeline(store), CTX, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sending = asyncio.create_task(send(port, oru(1500)))  # seconds of work
        await asyncio.sleep(0.5)  # being parsed now
        server.close()  # SIGTERM: as `fhir-fusion serve` shuts down
        assert await finish_messages(server, 60)
        await store.close()
        assert (await sending)[:2] == ("AA", "BIG1")  # committed before the store closed
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        try:
            assert len(await store.list_inputs(CTX, status="stored")) == 1
        finally:
            await store.close()

    asyncio.run(asyncio.wait_for(main(), 90))
