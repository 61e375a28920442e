"""The MLLP listener over real sockets on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from adapters.hl7v2.message import parse
from adapters.hl7v2.mllp import Abandoned, FrameReader, Oversized, frame, start_mllp_server
from adapters.pipeline import Pipeline
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

HL7 = Path(__file__).resolve().parents[2] / "shared" / "samples" / "hl7v2"
CTX = Context(caller="mllp-test")
Scenario = Callable[[SQLiteStore, int], Awaitable[None]]


def sample(name: str) -> bytes:
    return (HL7 / name).read_bytes()


def with_listener(db: Path, scenario: Scenario, max_bytes: int = 1 << 20,
                  idle_timeout: float = 30) -> None:
    async def main() -> None:
        store = await SQLiteStore.open(db)
        server = await start_mllp_server(Pipeline(store), CTX, "127.0.0.1", 0,
                                         max_message_bytes=max_bytes,
                                         idle_timeout=idle_timeout)
        port = server.sockets[0].getsockname()[1]
        try:
            await scenario(store, port)
        finally:
            server.close()
            await server.wait_closed()
            await store.close()

    asyncio.run(asyncio.wait_for(main(), 60))


async def read_ack(reader: asyncio.StreamReader) -> tuple[str, str, str]:
    """(MSA-1, MSA-2, ERR-3.1) of the next ACK frame."""
    data = await reader.readuntil(b"\x1c\x0d")
    start = data.index(b"\x0b")
    ack = parse(data[start + 1:-2])
    msa = ack.first("MSA")
    err = ack.first("ERR")
    assert msa is not None
    return msa.get(1), msa.get(2), err.get(3) if err else ""


def test_several_messages_on_one_connection_are_acked_after_storage(tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for name, control_id in (("fhirconverter_LAB-ORU-1.hl7", "182"),
                                 ("fhirconverter_ADT01-23.hl7", "599102"),
                                 ("google_oru_r01_ex6.hl7", "7")):
            writer.write(frame(sample(name)))
            await writer.drain()
            assert await read_ack(reader) == ("AA", control_id, "")
            # the ACK came after the commit: the input is in the store already
            (latest,) = await store.list_inputs(CTX, limit=1)
            assert latest.status == "stored"
            assert parse(latest.content).control_id == control_id
        writer.close()
        await writer.wait_closed()
        assert len(await store.list_inputs(CTX, status="stored")) == 3

    with_listener(tmp_path / "db.sqlite3", scenario)


def test_frames_split_across_reads_and_batched_in_one_write(tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = frame(sample("hapi_adt_a03.hl7"))
        for i in range(0, len(data), 7):  # 7-byte pieces, each its own TCP segment
            writer.write(data[i:i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        assert await read_ack(reader) == ("AA", "263206", "")
        # two frames and garbage between them in a single write
        writer.write(b"noise\r\n" + frame(sample("fhirconverter_ADT04-251.hl7")) + b"\x00junk"
                     + frame(sample("google_adt_a01_ex1.hl7")))
        await writer.drain()
        assert await read_ack(reader) == ("AA", "1270326314", "")
        assert await read_ack(reader) == ("AA", "MSG00001", "")
        writer.close()

    with_listener(tmp_path / "db.sqlite3", scenario)


def test_bad_messages_get_ae_or_ar_with_err_and_the_listener_survives(tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(sample("fhirconverter_SIU-S12-01.hl7")))
        assert await read_ack(reader) == ("AR", "MSG00012", "200")
        no_pid = b"MSH|^~\\&|A|F|B|G|20240101||ADT^A01|NP1|P|2.5\rPV1|1|I\r"
        writer.write(frame(no_pid))
        assert await read_ack(reader) == ("AE", "NP1", "100")
        bad_date = (b"MSH|^~\\&|A|F|B|G|20240101||ADT^A01|BD1|P|2.5\r"
                    b"PID|1||9^^^H^MR||X^Y||Aug 15, 1942\r")
        writer.write(frame(bad_date))
        assert await read_ack(reader) == ("AE", "BD1", "102")
        writer.write(frame(b"this is not HL7"))
        assert (await read_ack(reader))[0] == "AE"
        writer.write(frame(b"MSH|^~\\&|A|F|B|G|20240101||ADT^A01|V1|P|2.1\rPID|1||1^^^H\r"))
        assert await read_ack(reader) == ("AR", "V1", "203")
        writer.close()
        rejected = await store.list_inputs(CTX, status="rejected")
        assert len(rejected) == 5
        assert all("Aug 15" not in (r.reason or "") for r in rejected)

        # the listener still serves new connections
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(sample("fhirconverter_ADT01-28.hl7")))
        assert await read_ack(reader) == ("AA", "MSG00001", "")
        writer.close()

    with_listener(tmp_path / "db.sqlite3", scenario)


def test_nm_that_is_not_a_number_is_stored_and_acked_aa_with_a_warning_err(
    tmp_path: Path,
) -> None:
    """HL7 v2.5 section 2.15.4 ERR: ERR-2 location OBX^1^5^1, ERR-3 102 (data type error,
    table 0357), ERR-4 W (warning, table 0516) beside MSA-1 AA: stored, but told."""
    message = (b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240301101530+0100||ORU^R01|NM1|P|2.5.1\r"
               b"PID|1||P1^^^HOSP^MR||Roe^Ann||19700101|F\r"
               b"OBR|1|PL1|FL1^LAB|24323-8^Panel^LN|||20240301090000+0100\r"
               b"OBX|1|NM|2345-7^Glucose^LN||abc|mg/dL|||||F\r")

    async def scenario(store: SQLiteStore, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):  # the resent copy (a duplicate) is told the same
            writer.write(frame(message))
            data = await reader.readuntil(b"\x1c\x0d")
            ack = parse(data[data.index(b"\x0b") + 1:-2])
            msa, err = ack.first("MSA"), ack.first("ERR")
            assert msa is not None and (msa.get(1), msa.get(2)) == ("AA", "NM1")
            assert err is not None
            assert [err.get(2, i) for i in (1, 2, 3, 4)] == ["OBX", "1", "5", "1"]
            assert [err.get(3, i) for i in (1, 2, 3)] == ["102", "Data type error", "HL70357"]
            assert err.get(4) == "W"
            assert "OBX-5" in err.get(8)
        writer.close()
        (stored,) = await store.list_inputs(CTX)
        assert stored.status == "stored"

    with_listener(tmp_path / "db.sqlite3", scenario)


def test_oversized_message_is_refused_and_the_connection_goes_on(tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        big = sample("fhirconverter_ADT-A01-01.hl7")  # 8.5 kB, over the 4 kB limit
        writer.write(frame(big))
        assert await read_ack(reader) == ("AR", "MSG00001", "207")  # MSH read from its head
        writer.write(frame(sample("hapi_adt_a03.hl7")))
        assert await read_ack(reader) == ("AA", "263206", "")
        writer.close()
        # nothing received is lost: the oversized one is kept as rejected, cut to the limit
        rejected, stored = await store.list_inputs(CTX, status="rejected"), \
            await store.list_inputs(CTX, status="stored")
        assert len(stored) == 1 and len(rejected) == 1
        assert rejected[0].content == big[:4096]
        assert rejected[0].reason == (
            f"Message is larger than the 4096 bytes this receiver takes: {len(big)} bytes "
            "received; the first 4096 bytes are kept")

    with_listener(tmp_path / "db.sqlite3", scenario, max_bytes=4096)


def test_an_oversized_frame_without_its_end_is_answered_ar_and_the_connection_closed(
    tmp_path: Path,
) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        big = sample("fhirconverter_ADT-A01-01.hl7")
        writer.write(b"\x0b" + big)  # no 0x1C 0x0D: it may never end
        await writer.drain()
        assert await read_ack(reader) == ("AR", "MSG00001", "207")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the listener
        (kept,) = await store.list_inputs(CTX, status="rejected")
        assert kept.content == big[:4096]
        assert "without its end (the connection is closed)" in (kept.reason or "")

    with_listener(tmp_path / "db.sqlite3", scenario, max_bytes=4096)


def test_a_new_start_block_inside_a_frame_resynchronises_to_the_new_frame(
    tmp_path: Path,
) -> None:
    """0x0B junk 0x0B MSH... 0x1C 0x0D: the sender gave up on the first frame; the real
    message is answered AA and the abandoned bytes are kept as rejected (no ACK)."""
    async def scenario(store: SQLiteStore, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x0bhalf a message\r" + frame(sample("hapi_adt_a03.hl7")))
        await writer.drain()
        assert await read_ack(reader) == ("AA", "263206", "")
        writer.write(b"\x0b\x0b" + frame(sample("fhirconverter_ADT04-251.hl7")))  # empty
        assert await read_ack(reader) == ("AA", "1270326314", "")
        writer.close()
        (kept,) = await store.list_inputs(CTX, status="rejected")
        assert kept.content == b"half a message\r"
        assert "new start block" in (kept.reason or "")

    with_listener(tmp_path / "db.sqlite3", scenario)


def test_an_idle_connection_is_closed_and_its_unfinished_frame_kept(tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        reader, _ = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # silent: closed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x0bMSH|^~\\&|A|F|B|G|2024||ADT^A01|I1|P|2.5\r")  # never ended
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        (kept,) = await store.list_inputs(CTX, status="rejected")
        assert kept.content.startswith(b"MSH|")
        assert "idle for 0.3 s" in (kept.reason or "")

    with_listener(tmp_path / "db.sqlite3", scenario, idle_timeout=0.3)


def test_a_rejected_message_sent_again_is_one_dead_letter(tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(frame(sample("fhirconverter_SIU-S12-01.hl7")))
            assert await read_ack(reader) == ("AR", "MSG00012", "200")
        writer.close()
        (kept,) = await store.list_inputs(CTX)
        assert kept.status == "rejected"
        assert kept.result is not None and kept.result["received"] == 3

    with_listener(tmp_path / "db.sqlite3", scenario)


def test_client_disconnecting_mid_frame_does_not_hurt_the_listener(tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(sample("hapi_adt_a03.hl7"))[:100])
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(sample("hapi_adt_a03.hl7")))
        assert await read_ack(reader) == ("AA", "263206", "")
        writer.close()

    with_listener(tmp_path / "db.sqlite3", scenario)


def test_accepted_sockets_get_tcp_nodelay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listener sets TCP_NODELAY itself on the socket asyncio hands it (through the
    TransportSocket wrapper), rather than relying on the event loop's default."""
    import asyncio.trsock as trsock

    seen: list[tuple[int, int, int]] = []
    original = trsock.TransportSocket.setsockopt

    def spy(self: trsock.TransportSocket, level: int, option: int, value: int) -> None:
        seen.append((level, option, value))
        original(self, level, option, value)

    monkeypatch.setattr(trsock.TransportSocket, "setsockopt", spy)

    async def scenario(store: SQLiteStore, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(sample("hapi_adt_a03.hl7")))
        assert (await read_ack(reader))[0] == "AA"
        writer.close()

    with_listener(tmp_path / "db.sqlite3", scenario)
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in seen


def test_frame_reader_unit() -> None:
    reader = FrameReader(max_bytes=10)
    assert reader.feed(b"xx\x0bAB") == []
    assert reader.feed(b"C\x1c\x0d\x0b12") == [b"ABC"]
    (big,) = reader.feed(b"345678901234\x1c\x0d")  # over 10 bytes
    assert isinstance(big, Oversized) and big == b"1234567890"  # kept up to the limit
    assert (big.received, big.finished) == (14, True)
    assert reader.feed(b"\x0bok\x1c\x0d\x0bok2\x1c\x0d") == [b"ok", b"ok2"]
    # a new start block inside a frame: the frame so far is abandoned
    junk, real = reader.feed(b"\x0bjunk\x0bMSH|x\x1c\x0d")
    assert isinstance(junk, Abandoned) and junk == b"junk"
    assert real == b"MSH|x" and not isinstance(real, Abandoned)
    assert reader.feed(b"\x0b \x0bok\x1c\x0d") == [b"ok"]  # blank: nothing to keep
    # split over reads
    assert reader.feed(b"\x0bjunk") == []
    junk, real = reader.feed(b"more\x0bok\x1c\x0d")
    assert (junk, real) == (b"junkmore", b"ok") and isinstance(junk, Abandoned)
    # past the limit with no end yet: reported at once, unfinished
    (cut,) = reader.feed(b"\x0b" + b"x" * 11)
    assert isinstance(cut, Oversized) and not cut.finished and cut == b"x" * 10
