"""An external search index beside the store: choosing it, attaching the outbox to
either store, running the indexer with the server, and rebuilding the index from the
store (`fhir-fusion reindex --search-index`).

`--search-index` / FHIR_FUSION_SEARCH_INDEX: empty (or `sqlite`) keeps the default,
the SQLite store's own FTS5 index, written in its transactions; an Elasticsearch URL
(search.elasticsearch_index) adds the Elasticsearch index, kept current through the
durable outbox (fhir_server.outbox). With SQLite the FTS5 index is still kept and
still answers `_text`/`_content` in REST searches; with MongoDB, `start` hands the
Elasticsearch index to the store (`MongoStore.fulltext`), whose searches send
`_text`/`_content` to it (fhir_server.storage.mongodb_search).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fhir_server import jsonutil
from fhir_server.outbox import Indexer, Outbox, wait_drained
from fhir_server.storage import sqlite_bodies
from fhir_server.storage.base import Context, ResourceStore
from search.elasticsearch_index import ElasticsearchConfig, ElasticsearchIndex
from search.fulltext import Change

BATCH_SIZE = 500
_CONTEXT = Context(caller="search-index")


def parse_setting(text: str) -> str | None:
    """The setting's value: None for the built-in FTS5 index, else a checked URL."""
    text = text.strip()
    if not text or text.lower() in {"sqlite", "fts5"}:
        return None
    ElasticsearchConfig.parse(text)  # ValueError naming what is wrong
    return text


async def enable_outbox(store: ResourceStore) -> Outbox:
    """The store's outbox, written by every write from now on (SQLite: also by later
    openings of the file, e.g. an offline `ingest`; MongoDB: by this process's store)."""
    from fhir_server.storage.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        from fhir_server.storage import outbox_sqlite

        async with store.transaction(_CONTEXT) as txn:
            outbox_sqlite.attach(txn.connection)
        store.search_outbox = True
        return outbox_sqlite.SQLiteOutbox(store)
    from fhir_server.storage.mongodb import MongoStore

    if isinstance(store, MongoStore):
        from fhir_server.storage.outbox_mongo import MongoOutbox

        return await MongoOutbox.enable(store)
    raise TypeError(f"no search outbox for {type(store).__name__}")


async def detach_outbox(store: ResourceStore) -> int:
    """A SQLite store served without a search index: stop writing outbox rows, drop the
    pending ones (how many is returned; the index needs `reindex` when attached again)."""
    from fhir_server.storage.sqlite import SQLiteStore

    if not isinstance(store, SQLiteStore) or not store.search_outbox:
        return 0
    from fhir_server.storage import outbox_sqlite

    async with store.transaction(_CONTEXT) as txn:
        dropped = outbox_sqlite.detach(txn.connection)
    store.search_outbox = False
    return dropped


@dataclass
class RunningIndex:
    """The index, its indexer and the task draining the outbox while the server runs."""

    index: ElasticsearchIndex
    indexer: Indexer
    task: asyncio.Task[None]
    store: ResourceStore | None = None  # a MongoStore whose searches use `index`

    async def stop(self, drain: bool = False) -> None:
        """Stop the indexer (losing nothing: entries stay until the index has them);
        `drain` first applies every due entry (benchmarks, tests)."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.store is not None and getattr(self.store, "fulltext", None) is self.index:
            self.store.fulltext = None  # type: ignore[attr-defined]
        try:
            if drain:
                await wait_drained(self.indexer, timeout=3600)
        finally:
            await self.index.close()


async def start(store: ResourceStore, url: str) -> RunningIndex:
    """Check the cluster (SearchIndexError when it cannot be reached), attach the outbox
    and start draining it."""
    index = ElasticsearchIndex.connect(url)
    try:
        await index.check()
        outbox = await enable_outbox(store)
    except BaseException:
        await index.close()
        raise
    indexer = Indexer(store, outbox, index)
    searching = None
    if hasattr(store, "fulltext"):  # MongoDB: `_text`/`_content` searches ask the index
        store.fulltext = index
        searching = store
    return RunningIndex(index, indexer, asyncio.create_task(indexer.run()), searching)


# -- rebuild ------------------------------------------------------------------------


async def _sqlite_batches(
    store: Any, tenant: str, types: tuple[str, ...], size: int
) -> AsyncIterator[list[Change]]:
    scope = f" AND type IN ({','.join('?' * len(types))})" if types else ""
    after = 0
    while True:
        rows = store._reader.execute(
            f"SELECT rid, type, id, version, deleted, body FROM resources WHERE tenant = ? "
            f"AND rid > ?{scope} ORDER BY rid LIMIT ?",
            [tenant, after, *types, size],
        ).fetchall()
        if not rows:
            return
        yield [Change(t, i, v, None if d or b is None
                      else jsonutil.loads(sqlite_bodies.decode(store._reader, b)))
               for _, t, i, v, d, b in rows]  # fmt: skip
        after = rows[-1][0]
        await asyncio.sleep(0)


async def _mongo_batches(
    store: Any, tenant: str, types: tuple[str, ...], size: int
) -> AsyncIterator[list[Change]]:
    from fhir_server.storage.mongodb_documents import RESOURCES

    query: dict[str, Any] = {"tenant": tenant}
    if types:
        query["type"] = {"$in": list(types)}
    after: Any = None
    while True:
        page = {**query, "_id": {"$gt": after}} if after is not None else query
        cursor = store.db[RESOURCES].find(page, {"idx": 0}).sort("_id", 1).limit(size)
        docs = await cursor.to_list(length=size)
        if not docs:
            return
        yield [Change(d["type"], d["id"], int(d["version"]),
                      None if d.get("deleted") or d.get("body") is None
                      else jsonutil.loads(bytes(d["body"]))) for d in docs]  # fmt: skip
        after = docs[-1]["_id"]


async def _count(store: Any, tenant: str, types: tuple[str, ...]) -> int:
    from fhir_server.storage.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        scope = f" AND type IN ({','.join('?' * len(types))})" if types else ""
        (total,) = store._reader.execute(
            f"SELECT count(*) FROM resources WHERE tenant = ?{scope}", [tenant, *types]
        ).fetchone()
        return int(total)
    from fhir_server.storage.mongodb_documents import RESOURCES

    query: dict[str, Any] = {"tenant": tenant}
    if types:
        query["type"] = {"$in": list(types)}
    return int(await store.db[RESOURCES].count_documents(query))


@dataclass(frozen=True)
class RebuildProgress:
    processed: int
    total: int
    failed: int


async def rebuild(
    store: ResourceStore,
    index: ElasticsearchIndex,
    tenant: str,
    types: tuple[str, ...] = (),
    *,
    recreate: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[RebuildProgress], None] | None = None,
) -> RebuildProgress:
    """Send every current resource (and delete marker) of `tenant` to the index, with
    its version, a bulk request per batch. Writes made meanwhile are safe: the outbox
    delivers them, and the external versions keep whichever is newer. `recreate` drops
    the tenant's index first (new mappings, or a Chinese plugin installed since)."""
    from fhir_server.storage.sqlite import SQLiteStore

    await index.ensure_index(tenant, recreate=recreate)
    total = await _count(store, tenant, types)
    batches = (_sqlite_batches if isinstance(store, SQLiteStore) else _mongo_batches)(
        store, tenant, types, batch_size
    )
    processed = failed = 0
    async for changes in batches:
        results = await index.apply(tenant, changes)
        failed += sum(1 for result in results if result is not None)
        processed += len(changes)
        if progress is not None:
            progress(RebuildProgress(processed, total, failed))
    return RebuildProgress(processed, total, failed)
