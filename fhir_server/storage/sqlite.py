"""The embedded store: resources, their history, their search index and raw feed
inputs in one SQLite file.

SQLite runs in WAL mode. A write transaction is `BEGIN IMMEDIATE ... COMMIT` on
one writer connection, so a resource, its history row and its index rows are
written together or not at all. With the default `synchronous=NORMAL` a
committed transaction survives the server process being killed (the WAL is in
the operating system's hands once COMMIT returns); `synchronous="FULL"` also
survives power loss at the price of an fsync per commit.

Calls are made directly on the event loop thread: statements take microseconds,
and one writer at a time is all SQLite allows anyway. An asyncio lock keeps
transactions of concurrent requests apart; plain reads use a second connection
and never wait for writers.

Checkpoints (copying the WAL back into the database file, with its fsync) run on
a background thread instead of inside whichever COMMIT fills the WAL: done inline
they were two thirds of the cost of a commit. That thread's PASSIVE checkpoints
never catch up with a writer that never pauses (a bulk load), and the WAL then grows
without end (36 GB at 740k resources once): past WAL_LIMIT_BYTES the writer itself,
between transactions, waits for a TRUNCATE checkpoint.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import re
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fhir_server import jsonutil
from fhir_server.errors import FHIRError, conflict, precondition_failed
from fhir_server.storage import sqlite_fulltext, sqlite_index, sqlite_reindex
from fhir_server.storage import sqlite_bodies, sqlite_contained, sqlite_graph, sqlite_migrate
from fhir_server.storage import outbox_sqlite
from fhir_server.storage.base import Context, RawInput, SearchPage, StoredResource, WriteResult
from search import custom

if TYPE_CHECKING:
    from fhir_server.storage.reindex_jobs import SQLiteReindexJobs
    from search.query import SearchQuery

# 2: system ids, contentless full text, history indexes by vid; 3: no combo-* rows
# (sqlite_migrate)
SCHEMA_VERSION = 3

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS resources (
        rid INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        last_updated TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        body BLOB,
        UNIQUE (tenant, type, id))""",
    """CREATE TABLE IF NOT EXISTS versions (
        vid INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        last_updated TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        method TEXT NOT NULL,
        body BLOB,
        UNIQUE (tenant, type, id, version))""",
    # History pages walk these newest first: within a tenant (and type) an index is in vid
    # order, which is the order of last_updated (see _LATEST_INSTANT); without the 32
    # characters of the instant in every entry they are a third of the size.
    "CREATE INDEX IF NOT EXISTS versions_by_tenant ON versions (tenant)",
    "CREATE INDEX IF NOT EXISTS versions_by_type ON versions (tenant, type)",
    """CREATE TABLE IF NOT EXISTS inputs (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        feed TEXT NOT NULL,
        received_at TEXT NOT NULL,
        content BLOB NOT NULL,
        content_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        result BLOB)""",
    "CREATE INDEX IF NOT EXISTS inputs_by_hash ON inputs (tenant, feed, content_hash, status)",
    "CREATE INDEX IF NOT EXISTS inputs_by_status ON inputs (tenant, status, id)",
    # one row per conditional-create criteria (Transaction.claim); claiming writes it, so
    # two writers with the same criteria are ordered even across processes
    """CREATE TABLE IF NOT EXISTS conditional_claims (
        tenant TEXT NOT NULL,
        type TEXT NOT NULL,
        criteria TEXT NOT NULL,
        claims INTEGER NOT NULL,
        PRIMARY KEY (tenant, type, criteria)) WITHOUT ROWID""",
    # per-feed counters (received, stored, ...), added to in the transaction that
    # keeps the input, so they agree with the inputs table across restarts and processes
    """CREATE TABLE IF NOT EXISTS feed_counters (
        tenant TEXT NOT NULL,
        feed TEXT NOT NULL,
        name TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (tenant, feed, name)) WITHOUT ROWID""",
)

# meta elements the server owns; they never make two versions differ
_SERVER_META = ("versionId", "lastUpdated")

_VERSION_COLUMNS = "type, id, version, last_updated, deleted, method, body"
# The current version's body lives in `resources` only (its versions row has body NULL);
# it moves into the versions row when a later version or a delete supersedes it. Files
# written before keep a copy in both, which reads the same.
_VERSION_SELECT = (
    "SELECT v.type, v.id, v.version, v.last_updated, v.deleted, v.method, "
    "coalesce(v.body, (SELECT r.body FROM resources r WHERE r.tenant = v.tenant "
    "AND r.type = v.type AND r.id = v.id AND r.version = v.version)) FROM versions v"
)


def content_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# The latest instant in the file, read at the start of every write: the newest version
# row's, as instants grow with vid (each writer's _Clock passes this one under the write
# lock), so it is one rowid probe and needs no index on last_updated.
_LATEST_INSTANT = "SELECT last_updated FROM versions ORDER BY vid DESC LIMIT 1"


def _latest_instant(conn: sqlite3.Connection) -> str | None:
    row = conn.execute(_LATEST_INSTANT).fetchone()
    return None if row is None else str(row[0])


def _first_vid_since(conn: sqlite3.Connection, instant: str) -> int:
    """The lowest vid at or after which every version is from `instant` on (instants grow
    with vid): a bisection over the rowid, some 20 probes at 1M versions."""
    low, high = conn.execute("SELECT min(vid), max(vid) FROM versions").fetchone()
    if low is None:
        return 0
    high += 1  # the answer lies in [low, high]; high: no version is that recent
    while low < high:
        middle = (low + high) // 2
        vid, last_updated = conn.execute(
            "SELECT vid, last_updated FROM versions WHERE vid >= ? ORDER BY vid LIMIT 1",
            (middle,),
        ).fetchone()
        if last_updated >= instant:
            high = middle  # no vid lies in [middle, vid)
        else:
            low = vid + 1
    return int(low)


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA cache_size=-65536")
    return conn


def _version_row(conn: sqlite3.Connection, row: tuple[Any, ...]) -> StoredResource:
    rtype, rid, version, last_updated, deleted, method, body = row
    return StoredResource(
        rtype, rid, version, last_updated, bool(deleted), sqlite_bodies.decode(conn, body), method
    )


def _input_row(row: tuple[Any, ...]) -> RawInput:
    iid, feed, received_at, content, digest, status, reason, result = row
    return RawInput(
        iid,
        feed,
        received_at,
        content,
        digest,
        status,
        reason,
        jsonutil.loads(result) if result else None,
    )


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return resource
    kept = {k: v for k, v in meta.items() if k not in _SERVER_META}
    out = {k: v for k, v in resource.items() if k != "meta"}
    if kept:
        out["meta"] = kept
    return out


class _Clock:
    """Hands out strictly increasing UTC instants, so versions written one after
    the other never share a lastUpdated and `_since` cuts cleanly between them."""

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=timezone.utc)

    def advance_past(self, instant: str | None) -> None:
        if instant:
            self._last = max(self._last, datetime.fromisoformat(instant))

    def now(self) -> str:
        now = datetime.now(timezone.utc)
        if now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now.isoformat(timespec="microseconds")


class SQLiteTransaction:
    """The Transaction protocol on the writer connection, inside BEGIN IMMEDIATE."""

    def __init__(self, store: SQLiteStore, ctx: Context) -> None:
        self._store = store
        self._conn = store._writer
        self._ctx = ctx

    def _current(self, resource_type: str, resource_id: str) -> tuple[Any, ...] | None:
        return self._conn.execute(
            "SELECT rid, version, last_updated, deleted, body FROM resources "
            "WHERE tenant=? AND type=? AND id=?",
            (self._ctx.tenant, resource_type, resource_id),
        ).fetchone()

    async def read(self, resource_type: str, resource_id: str) -> StoredResource | None:
        return self._store._read(self._conn, self._ctx, resource_type, resource_id)

    def _keep_superseded(self, rid: int, resource_type: str, resource_id: str) -> None:
        """Move the current body of `rid` into its versions row, before the resources row
        gets a newer version (or none): history keeps every body once."""
        self._conn.execute(
            "UPDATE versions SET body = (SELECT body FROM resources WHERE rid = ?) "
            "WHERE tenant = ? AND type = ? AND id = ? AND body IS NULL AND version = "
            "(SELECT version FROM resources WHERE rid = ? AND deleted = 0)",
            (rid, self._ctx.tenant, resource_type, resource_id, rid),
        )

    @property
    def connection(self) -> sqlite3.Connection:
        """The writer connection inside this transaction, for index maintenance ($reindex)."""
        return self._conn

    async def search(self, query: SearchQuery) -> SearchPage:
        return self._store._search(self._conn, self._ctx, query)

    def _write(
        self,
        resource: dict[str, Any],
        rid: int | None,
        version: int,
        method: Literal["POST", "PUT"],
    ) -> StoredResource:
        resource_type, resource_id = resource["resourceType"], resource["id"]
        now = self._store._clock.now()
        meta = {**(resource.get("meta") or {}), "versionId": str(version), "lastUpdated": now}
        stored = {"resourceType": resource_type, "id": resource_id, "meta": meta, **resource}
        stored["meta"] = meta
        body = jsonutil.dumps(stored)
        sqlite_reindex.track(self._conn, resource_type, stored)  # 400 for a bad SearchParameter
        tenant = self._ctx.tenant
        fresh = rid is None
        kept = self._store._bodies.encode(self._conn, resource_type, body)
        if rid is None:
            cursor = self._conn.execute(
                "INSERT INTO resources (tenant, type, id, version, last_updated, deleted, body) "
                "VALUES (?, ?, ?, ?, ?, 0, ?)",
                (tenant, resource_type, resource_id, version, now, kept),
            )
            rid = cursor.lastrowid
            assert rid is not None
        else:
            self._keep_superseded(rid, resource_type, resource_id)
            self._conn.execute(
                "UPDATE resources SET version=?, last_updated=?, deleted=0, body=? WHERE rid=?",
                (version, now, kept, rid),
            )
        self._conn.execute(
            f"INSERT INTO versions (tenant, {_VERSION_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, 0, ?, NULL)",
            (tenant, resource_type, resource_id, version, now, method),
        )
        sqlite_index.replace_index(self._conn, rid, resource_type, stored, fresh=fresh)
        sqlite_fulltext.replace(self._conn, rid, stored, fresh=fresh)
        if self._store.search_outbox:  # an external search index: its outbox entry
            outbox_sqlite.record(self._conn, tenant, resource_type, resource_id, version)
        return StoredResource(resource_type, resource_id, version, now, False, body, method)

    async def create(
        self, resource: dict[str, Any], resource_id: str | None = None
    ) -> WriteResult:
        resource_id = resource_id or str(uuid.uuid4())
        if self._current(resource["resourceType"], resource_id) is not None:
            raise conflict(f"{resource['resourceType']}/{resource_id} already exists")
        stored = self._write({**resource, "id": resource_id}, None, 1, "POST")
        return WriteResult(stored, "created")

    async def update(self, resource: dict[str, Any], if_match: int | None = None) -> WriteResult:
        resource_type, resource_id = resource["resourceType"], resource["id"]
        current = self._current(resource_type, resource_id)
        if current is None:
            if if_match is not None:
                raise precondition_failed(
                    f"If-Match names version {if_match} of {resource_type}/{resource_id}, "
                    "which does not exist"
                )
            return WriteResult(self._write(resource, None, 1, "PUT"), "created")
        rid, version, last_updated, deleted, body = current
        if if_match is not None and if_match != version:
            raise precondition_failed(
                f"{resource_type}/{resource_id} is at version {version}, not {if_match}"
            )
        if deleted:
            return WriteResult(self._write(resource, rid, version + 1, "PUT"), "created")
        body = sqlite_bodies.decode(self._conn, body)
        if _without_server_meta(jsonutil.loads(body)) == _without_server_meta(resource):
            unchanged = StoredResource(
                resource_type, resource_id, version, last_updated, False, body, "PUT"
            )
            return WriteResult(unchanged, "unchanged")
        return WriteResult(self._write(resource, rid, version + 1, "PUT"), "updated")

    async def delete(
        self, resource_type: str, resource_id: str, if_match: int | None = None
    ) -> WriteResult:
        current = self._current(resource_type, resource_id)
        if current is None:
            return WriteResult(None, "not-found")
        rid, version, last_updated, deleted, _ = current
        if if_match is not None and if_match != version:
            raise precondition_failed(
                f"{resource_type}/{resource_id} is at version {version}, not {if_match}"
            )
        if deleted:
            marker = StoredResource(
                resource_type, resource_id, version, last_updated, True, None, "DELETE"
            )
            return WriteResult(marker, "unchanged")
        now = self._store._clock.now()
        version += 1
        self._keep_superseded(rid, resource_type, resource_id)
        self._conn.execute(
            "UPDATE resources SET version=?, last_updated=?, deleted=1, body=NULL WHERE rid=?",
            (version, now, rid),
        )
        self._conn.execute(
            f"INSERT INTO versions (tenant, {_VERSION_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, 1, 'DELETE', NULL)",
            (self._ctx.tenant, resource_type, resource_id, version, now),
        )
        sqlite_index.clear_index(self._conn, rid)
        sqlite_fulltext.remove(self._conn, rid)
        if self._store.search_outbox:
            outbox_sqlite.record(self._conn, self._ctx.tenant, resource_type, resource_id, version)
        sqlite_reindex.untrack(self._conn, resource_type, resource_id)
        marker = StoredResource(resource_type, resource_id, version, now, True, None, "DELETE")
        return WriteResult(marker, "deleted")

    async def record_input(
        self,
        feed: str,
        content: bytes,
        status: Literal["stored", "rejected"],
        reason: str | None = None,
        result: dict[str, Any] | None = None,
        input_id: int | None = None,
    ) -> int:
        result_json = jsonutil.dumps(result) if result is not None else None
        if input_id is not None:
            cursor = self._conn.execute(
                "UPDATE inputs SET status=?, reason=?, result=? WHERE id=? AND tenant=?",
                (status, reason, result_json, input_id, self._ctx.tenant),
            )
            if cursor.rowcount == 0:
                raise FHIRError.simple(404, "not-found", f"input {input_id} is not known")
            return input_id
        cursor = self._conn.execute(
            "INSERT INTO inputs (tenant, feed, received_at, content, content_hash, status, "
            "reason, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._ctx.tenant,
                feed,
                datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                content,
                content_hash(content),
                status,
                reason,
                result_json,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def count_feed(self, feed: str, counts: Mapping[str, int]) -> None:
        self._conn.executemany(
            "INSERT INTO feed_counters (tenant, feed, name, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (tenant, feed, name) DO UPDATE SET value = value + excluded.value",
            [(self._ctx.tenant, feed, name, n) for name, n in counts.items() if n],
        )

    async def claim(self, resource_type: str, criteria: str) -> None:
        # BEGIN IMMEDIATE already orders all writers; the row is the unique key the
        # storage contract asks for, written inside the transaction that creates
        self._conn.execute(
            "INSERT INTO conditional_claims (tenant, type, criteria, claims) VALUES (?, ?, ?, 1) "
            "ON CONFLICT (tenant, type, criteria) DO UPDATE SET claims = claims + 1",
            (self._ctx.tenant, resource_type, criteria),
        )


class SQLiteStore:
    """The ResourceStore protocol on one SQLite file."""

    CHECKPOINT_SECONDS = 1.0
    WAL_LIMIT_BYTES = 256 * 2**20  # see the module docstring

    def __init__(
        self, writer: sqlite3.Connection, reader: sqlite3.Connection, path: Path, synchronous: str
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._path = path
        self._lock = asyncio.Lock()
        self._clock = _Clock()
        # set while the current task holds a batch open (see `batch`)
        self._in_batch: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"sqlite-batch-{id(self)}", default=False
        )
        self._savepoints = 0
        self._bodies = sqlite_bodies.BodyCodec()
        # writes also add a search_outbox row (outbox_sqlite): set by open(search_outbox=True)
        # and by a file an external search index is attached to
        self.search_outbox = False
        writer.execute("PRAGMA wal_autocheckpoint=0")
        self._wal = Path(f"{path}-wal")
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop,
            args=(path, synchronous),
            name="sqlite-checkpoint",
            daemon=True,
        )
        self._checkpointer.start()

    def _checkpoint_loop(self, path: Path, synchronous: str) -> None:
        conn = _connect(path, synchronous)
        try:
            while not self._stop.wait(self.CHECKPOINT_SECONDS):
                # PASSIVE never blocks the writer or readers; what it cannot copy now
                # is copied on a later round.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            # A busy or failing checkpoint loses nothing (the WAL keeps the data);
            # leave the next open to checkpoint.
            pass
        finally:
            conn.close()

    @classmethod
    async def open(
        cls, path: str | Path, *, synchronous: str = "NORMAL", search_outbox: bool = False
    ) -> SQLiteStore:
        if synchronous.upper() not in {"NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = _connect(path, synchronous.upper())
        (user_version,) = writer.execute("PRAGMA user_version").fetchone()
        if user_version > SCHEMA_VERSION:
            writer.close()
            raise RuntimeError(
                f"{path} was written by a newer fhir-fusion (schema {user_version}); "
                f"this one reads schema {SCHEMA_VERSION}"
            )
        try:
            if user_version < SCHEMA_VERSION:
                sqlite_migrate.migrate(writer, path)
        except BaseException:
            writer.close()
            raise
        writer.execute("BEGIN IMMEDIATE")
        try:
            for statement in (
                *_SCHEMA, *sqlite_bodies.SCHEMA, *sqlite_index.SCHEMA, *sqlite_fulltext.SCHEMA, *sqlite_reindex.SCHEMA,
                *outbox_sqlite.SCHEMA,
            ):
                writer.execute(statement)
            if search_outbox:
                outbox_sqlite.attach(writer)
            writer.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            writer.execute("COMMIT")
        except BaseException:
            writer.execute("ROLLBACK")
            writer.close()
            raise
        store = cls(writer, _connect(path, synchronous.upper()), path, synchronous.upper())
        store.search_outbox = search_outbox or outbox_sqlite.attached(writer)
        sqlite_reindex.load_registry(writer, str(path))  # custom SearchParameters of this file
        # searches reload them too when another process has changed them (break-new #7)
        custom.REGISTRY.set_refresher(store._sync_registry_for_search)
        store._clock.advance_past(_latest_instant(writer))
        return store

    def reindex_jobs(self) -> SQLiteReindexJobs:
        """The resumable index-rebuild jobs of this file (storage.reindex_jobs)."""
        from fhir_server.storage.reindex_jobs import SQLiteReindexJobs

        return SQLiteReindexJobs(self)

    def _sync_registry_for_search(self) -> None:
        try:
            sqlite_reindex.sync_registry(self._reads(), str(self._path))
        except sqlite3.ProgrammingError:  # closed, or called from another thread
            pass

    async def close(self) -> None:
        custom.REGISTRY.set_refresher(None, only=self._sync_registry_for_search)
        async with self._lock:
            self._stop.set()
            await asyncio.to_thread(self._checkpointer.join)
            self._reader.close()
            self._writer.close()

    @asynccontextmanager
    async def batch(self, ctx: Context) -> AsyncIterator[None]:
        """Group the transactions the current task opens inside into one commit.

        Each of them still succeeds or fails on its own (it runs in a SAVEPOINT), but
        nothing is durable until the batch ends: use it where the acknowledgement
        comes after the whole batch, as when loading files. One commit for many
        inputs writes each shared index page once instead of once per input.
        Reads of the current task inside the batch see its writes."""
        if self._in_batch.get():
            yield
            return
        async with self._lock:
            self._begin()
            token = self._in_batch.set(True)
            try:
                yield
            except BaseException:
                self._writer.execute("ROLLBACK")
                self._bodies.forget_unsaved()
                raise
            else:
                self._writer.execute("COMMIT")
                await self._bound_wal()
            finally:
                self._in_batch.reset(token)

    def _begin(self) -> None:
        try:
            self._writer.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            # another process held the write lock past busy_timeout, or the file went away:
            # a 503 the client may retry, as for a MongoDB outage
            raise FHIRError.simple(
                503, "transient",
                f"The SQLite database is unavailable ({exc}); nothing was written. Retry later.",
            ) from None
        # Another process (an offline `ingest` beside the server) may have written
        # later instants; never hand out one that sorts before them.
        self._clock.advance_past(_latest_instant(self._writer))
        # ... or SearchParameters: index this transaction's writes with them too
        sqlite_reindex.sync_registry(self._writer, str(self._path))

    @asynccontextmanager
    async def transaction(self, ctx: Context) -> AsyncIterator[SQLiteTransaction]:
        if self._in_batch.get():
            self._savepoints += 1
            name = f"tx{self._savepoints}"
            self._writer.execute(f"SAVEPOINT {name}")
            try:
                yield SQLiteTransaction(self, ctx)
            except BaseException:
                self._writer.execute(f"ROLLBACK TO {name}")
                self._bodies.forget_unsaved()
                self._writer.execute(f"RELEASE {name}")
                raise
            else:
                self._writer.execute(f"RELEASE {name}")
            return
        async with self._lock:
            self._begin()
            try:
                yield SQLiteTransaction(self, ctx)
            except BaseException:
                self._writer.execute("ROLLBACK")
                self._bodies.forget_unsaved()
                raise
            else:
                self._writer.execute("COMMIT")
                await self._bound_wal()

    async def _bound_wal(self) -> None:
        """With the write lock held and no transaction open: a WAL past the limit is
        checkpointed and truncated before the next writer may start (readers are
        waited for through the busy timeout; a checkpoint that cannot finish now is
        tried again after the next commit)."""
        try:
            if self._wal.stat().st_size <= self.WAL_LIMIT_BYTES:
                return
        except FileNotFoundError:
            return
        try:
            # fetched, so that no statement stays open on the writer (COMMIT would refuse)
            await asyncio.to_thread(
                lambda: self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            )
        except sqlite3.Error:
            pass

    # -- reads ---------------------------------------------------------------

    def _reads(self) -> sqlite3.Connection:
        """The reader connection, or the writer inside the current task's batch, whose
        writes are not committed yet."""
        return self._writer if self._in_batch.get() else self._reader

    def _read(
        self, conn: sqlite3.Connection, ctx: Context, resource_type: str, resource_id: str
    ) -> StoredResource | None:
        row = conn.execute(
            "SELECT version, last_updated, deleted, body FROM resources "
            "WHERE tenant=? AND type=? AND id=?",
            (ctx.tenant, resource_type, resource_id),
        ).fetchone()
        if row is None:
            return None
        version, last_updated, deleted, body = row
        method = "DELETE" if deleted else ("POST" if version == 1 else "PUT")
        return StoredResource(
            resource_type, resource_id, version, last_updated, bool(deleted),
            sqlite_bodies.decode(conn, body), method,
        )

    def _search(self, conn: sqlite3.Connection, ctx: Context, query: SearchQuery) -> SearchPage:
        if any(c.modifier in ("in", "not-in", "above", "below") and c.param_type == "token"
               for c in query.clauses):
            # only SQLiteStore.search resolves them: expanding may write (the concept store)
            raise FHIRError.simple(
                400, "not-supported",
                "Token :in, :not-in, :above and :below are not supported inside a transaction",
            )  # fmt: skip
        found = sqlite_index.search_page(conn, ctx.tenant, query)
        rids, total, next_cursor = found.rids, found.total, found.next_cursor
        if not rids:
            return SearchPage([], total)
        placeholders = ",".join("?" * len(rids))
        rows = conn.execute(
            f"SELECT rid, type, id, version, last_updated, body FROM resources "
            f"WHERE rid IN ({placeholders})",
            rids,
        ).fetchall()
        by_rid = {
            row[0]: StoredResource(
                row[1], row[2], row[3], row[4], False, sqlite_bodies.decode(conn, row[5]),
                "POST" if row[3] == 1 else "PUT",
            )
            for row in rows
        }
        # contained resources found with _contained have negative rids (sqlite_contained)
        by_rid.update(sqlite_contained.stored(conn, [rid for rid in rids if rid < 0]))
        matches = [by_rid[rid] for rid in rids if rid in by_rid]
        if not query.result.includes:
            return SearchPage(matches, total, next_cursor=next_cursor)
        # _include / _revinclude (search.result): one IN query per include and round
        included, truncated = sqlite_graph.included(
            conn, ctx.tenant, query.result.includes,
            [(rid, by_rid[rid].resource_type, by_rid[rid].id) for rid in rids if rid in by_rid],
            sqlite_index.param_id,
        )
        return SearchPage(
            matches, total, included=included, included_truncated=truncated,
            next_cursor=next_cursor,
        )

    async def read(
        self, ctx: Context, resource_type: str, resource_id: str
    ) -> StoredResource | None:
        return self._read(self._reads(), ctx, resource_type, resource_id)

    async def vread(
        self, ctx: Context, resource_type: str, resource_id: str, version: int
    ) -> StoredResource | None:
        row = self._reads().execute(
            f"{_VERSION_SELECT} WHERE v.tenant=? AND v.type=? AND v.id=? AND v.version=?",
            (ctx.tenant, resource_type, resource_id, version),
        ).fetchone()
        return None if row is None else _version_row(self._reads(), row)

    async def history(
        self,
        ctx: Context,
        resource_type: str | None = None,
        resource_id: str | None = None,
        since: str | None = None,
        count: int = 50,
        offset: int = 0,
    ) -> tuple[list[StoredResource], int]:
        where = ["v.tenant=?"]
        args: list[Any] = [ctx.tenant]
        if resource_type is not None:
            where.append("v.type=?")
            args.append(resource_type)
        if resource_id is not None:
            where.append("v.id=?")
            args.append(resource_id)
        if since is not None:
            instant = _utc_instant(since)
            # the vid bound is what an index range uses; the instant itself still decides
            where.append("v.vid>=? AND v.last_updated>=?")
            args += [_first_vid_since(self._reads(), instant), instant]
        clause = " AND ".join(where)
        (total,) = self._reads().execute(
            f"SELECT count(*) FROM versions v WHERE {clause}", args
        ).fetchone()
        # newest first: vid order is last_updated order (_LATEST_INSTANT)
        rows = self._reads().execute(
            f"{_VERSION_SELECT} WHERE {clause} ORDER BY v.vid DESC LIMIT ? OFFSET ?",
            [*args, count, offset],
        ).fetchall()
        reads = self._reads()
        return [_version_row(reads, row) for row in rows], total

    async def search(self, ctx: Context, query: SearchQuery) -> SearchPage:
        # token :in/:not-in/:above/:below become plain token clauses over the codes they
        # stand for (the terminology tables live in this file too)
        from terminology.search_modifiers import resolve

        query = await resolve(self, ctx, query)
        return self._search(self._reads(), ctx, query)

    # -- raw feed inputs -----------------------------------------------------

    _INPUT_COLUMNS = "id, feed, received_at, content, content_hash, status, reason, result"

    async def find_input(
        self, ctx: Context, feed: str, content_hash: str, status: str = "stored"
    ) -> RawInput | None:
        row = self._reads().execute(
            f"SELECT {self._INPUT_COLUMNS} FROM inputs "
            "WHERE tenant=? AND feed=? AND content_hash=? AND status=? ORDER BY id LIMIT 1",
            (ctx.tenant, feed, content_hash, status),
        ).fetchone()
        return None if row is None else _input_row(row)

    async def get_input(self, ctx: Context, input_id: int) -> RawInput | None:
        row = self._reads().execute(
            f"SELECT {self._INPUT_COLUMNS} FROM inputs WHERE tenant=? AND id=?",
            (ctx.tenant, input_id),
        ).fetchone()
        return None if row is None else _input_row(row)

    async def list_inputs(
        self,
        ctx: Context,
        feed: str | None = None,
        status: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[RawInput]:
        where = ["tenant=?"]
        args: list[Any] = [ctx.tenant]
        if before is not None:
            where.append("id<?")
            args.append(before)
        if feed is not None:
            where.append("feed=?")
            args.append(feed)
        if status is not None:
            where.append("status=?")
            args.append(status)
        rows = self._reads().execute(
            f"SELECT {self._INPUT_COLUMNS} FROM inputs WHERE {' AND '.join(where)} "
            "ORDER BY id DESC LIMIT ?",
            [*args, limit],
        ).fetchall()
        return [_input_row(row) for row in rows]

    async def feed_counters(self, ctx: Context) -> dict[str, dict[str, int]]:
        reads = self._reads()
        counters: dict[str, dict[str, int]] = {}
        for feed, name, value in reads.execute(
            "SELECT feed, name, value FROM feed_counters WHERE tenant=?", (ctx.tenant,)
        ):
            counters.setdefault(feed, {})[name] = value
        for feed, pending in reads.execute(
            "SELECT feed, count(*) FROM inputs WHERE tenant=? AND status='rejected' GROUP BY feed",
            (ctx.tenant,),
        ):
            counters.setdefault(feed, {})["pending"] = pending
        return counters


def _utc_instant(value: str) -> str:
    """A FHIR instant (_since, R4 http.html#history) as the store's fixed-width UTC text,
    for comparisons. An instant has seconds and a time zone (datatypes.html#instant);
    without a zone the moment is unknown, so that is a 400 rather than a guess. An
    instant may have any number of fraction digits; versions are stored to the
    microsecond, so digits past the sixth round up, not down: a version stored at
    .082812 is before .0828125 and is not "created at or after" it."""
    text = value.strip()
    match = _INSTANT.fullmatch(text)
    parsed = None
    if match is not None:
        moment, fraction, zone, hours, minutes = match.groups()
        if hours is not None and (int(minutes) > 59 or (int(hours), int(minutes)) > (14, 0)):
            raise FHIRError.simple(
                400, "invalid", f"_since has the time-zone offset {zone}; an R4 instant's "
                "offset is at most 14:00", "_since",
            )  # fmt: skip
        fraction = fraction or ""
        try:
            parsed = datetime.fromisoformat(
                f"{moment}.{fraction[:6].ljust(6, '0')}{'+00:00' if zone == 'Z' else zone}"
            )
        except ValueError:  # e.g. month 13: the pattern checks only the shape
            parsed = None
        if parsed is not None and fraction[6:].strip("0"):
            parsed += timedelta(microseconds=1)
    if parsed is None:
        raise FHIRError.simple(
            400, "invalid",
            "_since must be a FHIR instant with a time zone such as 2024-03-01T10:00:00Z",
            "_since",
        )
    return parsed.astimezone(timezone.utc).isoformat(timespec="microseconds")


# R4 instant: YYYY-MM-DDThh:mm:ss[.fraction](Z|+hh:mm|-hh:mm), fraction of any length
_INSTANT = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-](\d{2}):(\d{2}))"
)
