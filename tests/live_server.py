"""The FHIR app on a SQLite store, served by uvicorn on an ephemeral 127.0.0.1 port, for
tests that speak HTTP over a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn

from fhir_server.app import create_app
from fhir_server.storage.sqlite import SQLiteStore


@asynccontextmanager
async def live_server(tmp_path: Path) -> AsyncIterator[tuple[str, SQLiteStore]]:
    """(the server's root URL, e.g. http://127.0.0.1:PORT, and its store)."""
    store = await SQLiteStore.open(tmp_path / "fhir.db")
    server = uvicorn.Server(uvicorn.Config(
        create_app(store), host="127.0.0.1", port=0, log_config=None, access_log=False,
        lifespan="on",
    ))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                raise RuntimeError("uvicorn did not start")
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", store
    finally:
        server.should_exit = True
        await serving
        await store.close()
