"""The store a benchmark runs on: the SQLite file it names, or MongoDB with `--store URL`;
and with `--search-index URL` the Elasticsearch index `serve` would keep beside it.

A MongoDB URL that cannot be reached makes the benchmark stop with a message and exit
status 0 ("skipped"), so a script run without a server says so instead of failing.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir_server.storage.mongodb import MongoStore, StoreUnavailable  # noqa: E402
from fhir_server.storage.sqlite import SQLiteStore  # noqa: E402

SEARCH_INDEX_HELP = (
    "an Elasticsearch URL (elasticsearch://host:9200?replicas=0): the outbox indexer runs "
    "while the benchmark writes, as in serve; an unreachable one skips the benchmark"
)
STORE_HELP = (
    "a MongoDB URL (mongodb://host:port/database, a replica set) to run on instead of "
    "SQLite; an unreachable one skips the benchmark"
)


def with_database(url: str, name: str) -> str:
    """`url` naming the database `name` (benchmarks use one of their own per run)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def fresh_database(url: str, label: str) -> str:
    return with_database(url, f"fhir_fusion_bench_{label}_{uuid.uuid4().hex[:8]}")


async def open_store(store_url: str | None, sqlite_path: Path) -> Any:
    if store_url is None:
        return await SQLiteStore.open(sqlite_path)
    try:
        return await MongoStore.open(store_url, server_selection_timeout_ms=5000)
    except StoreUnavailable as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        raise SystemExit(0) from None


async def bytes_per_resource(store: Any, sqlite_path: Path | None, resources: int) -> str:
    """Bytes stored per resource: SQLite's file after VACUUM (WAL checkpointed), or
    MongoDB's dbStats storageSize + indexSize (compressed, on disk)."""
    if isinstance(store, MongoStore):
        stats = await store.db.command("dbStats")
        size = int(stats["storageSize"]) + int(stats["indexSize"])
        what = "MongoDB storageSize + indexSize"
    else:
        assert sqlite_path is not None
        await store.close()
        import sqlite3

        conn = sqlite3.connect(sqlite_path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        breakdown = _sqlite_breakdown(conn, resources)
        conn.close()
        size = sqlite_path.stat().st_size
        what = "SQLite file after VACUUM"
    line = (
        f"{size / 2**20:.1f} MiB for {resources} resources: {size / resources:,.0f} bytes "
        f"({size / resources / 1024:.2f} KiB) per resource ({what})"
    )
    return line + breakdown if not isinstance(store, MongoStore) else line


def _sqlite_breakdown(conn: Any, resources: int) -> str:
    """Bytes per resource of each table and index of 1 byte or more (SQLite's dbstat), as
    lines after the total; nothing where SQLite was built without dbstat."""
    import sqlite3

    try:
        rows = conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
    except sqlite3.OperationalError:
        return ""
    shown = [f"  {name:<32} {size / resources:7,.0f}" for name, size in rows
             if size / resources >= 1]  # fmt: skip
    return "\nbytes per resource by table and index (dbstat):\n" + "\n".join(shown)


async def start_search_index(store: Any, url: str | None) -> Any:
    """`serve`'s outbox and indexer on `store`, draining into the index at `url` while
    the benchmark writes; None without a URL."""
    if url is None:
        return None
    from fhir_server import search_index
    from search.elasticsearch_index import SearchIndexError

    try:
        return await search_index.start(store, url)
    except SearchIndexError as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        raise SystemExit(0) from None


async def finish_search_index(running: Any) -> str:
    """Apply what the indexer has not applied yet and stop it; a line with the figures."""
    if running is None:
        return ""
    began = time.perf_counter()
    await running.stop(drain=True)
    metrics = running.indexer
    return (f"search index: {metrics.applied} changes applied, {metrics.retried} retried; "
            f"outbox empty {time.perf_counter() - began:.2f} s after the last write")
