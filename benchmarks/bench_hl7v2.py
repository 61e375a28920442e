"""ORU^R01 throughput: from files (ingest_files) and over MLLP with an ACK per message.

    .venv/bin/python benchmarks/bench_hl7v2.py [--messages 2000] [--store mongodb://...]
        [--search-index elasticsearch://...]

Each run uses a fresh SQLite store in a temporary folder and the deterministic demo
feed's ORU^R01 messages (1 to 4 OBX each, patients recurring as in a real feed). The
MLLP client sends one message, waits for its ACK, then sends the next; the concurrent
run does the same on 4 connections at once. Only 127.0.0.1 is used.
Targets (2-core machine): 500 messages/s from files, 300 messages/s over MLLP.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from adapters.hl7v2.mllp import frame, start_mllp_server
from adapters.hl7v2.translate import translate_bytes
from adapters.ingest import ingest_files
from adapters.pipeline import Pipeline
from fhir_server import demo
from fhir_server.storage.base import Context
from stores import STORE_HELP, fresh_database, open_store  # benchmarks/, the script's folder
from stores import SEARCH_INDEX_HELP, finish_search_index, start_search_index

CTX = Context(caller="bench")


def oru_messages(count: int) -> list[bytes]:
    messages: list[bytes] = []
    total = count * 2
    while len(messages) < count:
        messages = [m.payload for m in demo.demo_messages(total) if m.message_type == "ORU^R01"]
        total *= 2
    return messages[:count]


async def bench_files(folder: Path, messages: list[bytes], store_url: str | None = None,
                      search_index: str | None = None) -> float:
    inbox = folder / "inbox"
    inbox.mkdir()
    per_file = 100
    for i in range(0, len(messages), per_file):
        (inbox / f"batch{i // per_file:04d}.hl7").write_bytes(
            b"\n".join(m.replace(b"\r", b"\n") for m in messages[i:i + per_file]))
    store = await open_store(store_url and fresh_database(store_url, "files"),
                             folder / "files.sqlite3")
    indexer = await start_search_index(store, search_index)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        summary = await ingest_files(Pipeline(store), CTX, [inbox])
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        if indexer is not None:
            print(await finish_search_index(indexer))
    finally:
        await store.close()
    if summary.stored != len(messages):
        raise SystemExit(f"files: expected {len(messages)} stored, got\n{summary}")
    translate = time.process_time()
    for message in messages:
        translate_bytes(message)
    translate = time.process_time() - translate
    print(f"per message: {1000 * elapsed / len(messages):.2f} ms wall, "
          f"{1000 * cpu / len(messages):.2f} ms CPU, of which translation "
          f"{1000 * translate / len(messages):.2f} ms")
    return len(messages) / elapsed


async def _client(port: int, messages: list[bytes]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    accepted = 0
    for message in messages:
        writer.write(frame(message))
        await writer.drain()
        ack = await reader.readuntil(b"\x1c\x0d")
        accepted += b"MSA|AA|" in ack
    writer.close()
    await writer.wait_closed()
    return accepted


async def bench_mllp(folder: Path, messages: list[bytes], connections: int,
                     store_url: str | None = None) -> float:
    store = await open_store(store_url and fresh_database(store_url, f"mllp{connections}"),
                             folder / f"mllp{connections}.sqlite3")
    server = await start_mllp_server(Pipeline(store), CTX, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        shares = [messages[i::connections] for i in range(connections)]
        start = time.perf_counter()
        accepted = sum(await asyncio.gather(*(_client(port, s) for s in shares)))
        elapsed = time.perf_counter() - start
    finally:
        server.close()
        await server.wait_closed()
        await store.close()
    if accepted != len(messages):
        raise SystemExit(f"mllp: {accepted} of {len(messages)} acknowledged AA")
    return len(messages) / elapsed


async def main(count: int, profile: bool, store_url: str | None = None,
               search_index: str | None = None) -> None:
    messages = oru_messages(count)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await bench_files(folder, messages, store_url)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            return
        files = await bench_files(folder, messages, store_url, search_index)
        print(f"files (ingest_files):          {files:8.0f} ORU^R01/s  (target 500)")
        one = await bench_mllp(folder, messages, 1, store_url)
        print(f"MLLP, 1 connection, ACK each:  {one:8.0f} ORU^R01/s  (target 300)")
        four = await bench_mllp(folder, messages, 4, store_url)
        print(f"MLLP, 4 connections:           {four:8.0f} ORU^R01/s")
        where = "MongoDB database" if store_url else "SQLite store"
        print(f"({len(messages)} messages per run, fresh {where} each)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="profile the file run")
    parser.add_argument("--store", metavar="URL", help=STORE_HELP)
    parser.add_argument("--search-index", metavar="URL", help=SEARCH_INDEX_HELP)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.profile, args.store, args.search_index))
