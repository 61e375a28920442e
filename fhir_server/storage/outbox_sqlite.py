"""The search-index outbox of the SQLite store: table `search_outbox` in the store's
own file, one row per resource write or delete, inserted by SQLiteTransaction in the
transaction that writes the resource (only when the store is opened with
`search_outbox=True`, i.e. an external search index is configured). A rolled-back
write leaves no row; a committed one always has its row, so a crash between the
store and the index loses nothing: the indexer (fhir_server.outbox) finds the row
after a restart.

Once an index is attached (`attach`, recorded in table search_outbox_state), every
later opening of the file writes outbox rows, so offline commands (`fhir-fusion
ingest`) beside a server with an index add their rows too; `detach` (serve without a
search index) stops that and drops the pending rows, after which the index must be
rebuilt (`fhir-fusion reindex --search-index`) when it is attached again.

Rows: seq (order of writes), tenant, type, id, version (the version written; the
indexer indexes whatever is current when it gets there, so only the existence of a
row matters), attempts, due (unix time before which the row is not taken), owner (the
token of the claim holding it, or NULL) and the last error (an error type, never
patient data).

One file may be drained by several processes at once (`serve` and an offline
`fhir-fusion reindex`, or an ingest beside it). A claim is one BEGIN IMMEDIATE
transaction, so SQLite's write lock makes it atomic across processes: it reads the
first due rows in (due, seq) order (index search_outbox_due) and sets their owner to a
new token and their due time to the end of the lease (a conditional UPDATE). A
leased row is not due again until its lease runs out (its claimer died), and removing
or rescheduling a row requires `owner` to still be the claimer's token.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fhir_server.outbox import OutboxEntry
from fhir_server.storage.base import Context

if TYPE_CHECKING:
    from fhir_server.storage.sqlite import SQLiteStore

_CONTEXT = Context(caller="search-indexer")  # the outbox spans tenants; rows carry theirs

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS search_outbox (
        seq INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        due REAL NOT NULL DEFAULT 0,
        error TEXT,
        owner TEXT)""",
    "CREATE INDEX IF NOT EXISTS search_outbox_due ON search_outbox (due, seq)",
    """CREATE TABLE IF NOT EXISTS search_outbox_state (
        only INTEGER PRIMARY KEY CHECK (only = 1),
        attached_at TEXT NOT NULL)""",
)


def attached(conn: sqlite3.Connection) -> bool:
    """Whether an external search index is attached to this file."""
    return conn.execute("SELECT 1 FROM search_outbox_state").fetchone() is not None


def attach(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO search_outbox_state (only, attached_at) "
        "VALUES (1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
    )


def detach(conn: sqlite3.Connection) -> int:
    """Stop writing outbox rows; returns how many pending rows were dropped."""
    conn.execute("DELETE FROM search_outbox_state")
    return conn.execute("DELETE FROM search_outbox").rowcount


def _add_owner_column(conn: sqlite3.Connection) -> None:
    """Files made before leases have no owner column; add it (once, idempotent)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(search_outbox)")}
    if "owner" not in columns:
        conn.execute("ALTER TABLE search_outbox ADD COLUMN owner TEXT")


def record(
    conn: sqlite3.Connection, tenant: str, resource_type: str, resource_id: str, version: int
) -> None:
    """Called inside the write transaction of the resource."""
    conn.execute(
        "INSERT INTO search_outbox (tenant, type, id, version) VALUES (?, ?, ?, ?)",
        (tenant, resource_type, resource_id, version),
    )


class SQLiteOutbox:
    """fhir_server.outbox.Outbox on a SQLiteStore: changes go through the store's
    writer connection in a short transaction of their own, so they queue behind
    resource writes instead of contending for SQLite's single write lock."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._migrated = False

    async def claim(self, now: float, limit: int, lease_seconds: float) -> list[OutboxEntry]:
        owner = uuid.uuid4().hex
        async with self._store.transaction(_CONTEXT) as txn:
            conn = txn.connection
            if not self._migrated:
                _add_owner_column(conn)
                self._migrated = True
            # BEGIN IMMEDIATE holds SQLite's write lock from the start, so no other
            # process can claim between this SELECT and the UPDATE (no RETURNING:
            # SQLite before 3.35, which the store still supports, lacks it)
            rows = conn.execute(
                "SELECT seq, tenant, type, id, version, attempts FROM search_outbox "
                "WHERE due <= ? ORDER BY due, seq LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE search_outbox SET owner = ?, due = ? WHERE seq = ? AND due <= ?",
                [(owner, now + lease_seconds, seq, now) for seq, *_ in rows],
            )
        return [
            OutboxEntry(str(seq), t, rtype, rid, v, n, owner)
            for seq, t, rtype, rid, v, n in rows
        ]

    async def due(self, now: float, limit: int) -> list[OutboxEntry]:
        """The entries a claim at `now` would take, without claiming them (a look for
        tools and tests)."""
        async with self._store.transaction(_CONTEXT) as txn:
            rows = txn.connection.execute(
                "SELECT seq, tenant, type, id, version, attempts FROM search_outbox "
                "WHERE due <= ? ORDER BY due, seq LIMIT ?",
                (now, limit),
            ).fetchall()
        return [OutboxEntry(str(seq), t, rtype, rid, v, n) for seq, t, rtype, rid, v, n in rows]

    async def done(self, entries: Sequence[OutboxEntry]) -> int:
        return await self._owned(
            "DELETE FROM search_outbox WHERE seq = ? AND owner = ?",
            [(int(e.key), e.owner) for e in entries],
        )

    async def retry_later(self, entries: Sequence[OutboxEntry], due: float, error: str) -> int:
        return await self._owned(
            "UPDATE search_outbox SET attempts = attempts + 1, due = ?, error = ?, owner = NULL "
            "WHERE seq = ? AND owner = ?",
            [(due, error, int(e.key), e.owner) for e in entries],
        )

    async def release(self, entries: Sequence[OutboxEntry]) -> int:
        return await self._owned(
            "UPDATE search_outbox SET due = 0, owner = NULL WHERE seq = ? AND owner = ?",
            [(int(e.key), e.owner) for e in entries],
        )

    async def _owned(self, statement: str, rows: list[tuple[object, ...]]) -> int:
        """Run `statement` once per row (each ends in `seq = ? AND owner = ?`); how many
        rows it changed, i.e. how many entries were still owned by their claim."""
        if not rows:
            return 0
        changed = 0
        async with self._store.transaction(_CONTEXT) as txn:
            for row in rows:
                changed += txn.connection.execute(statement, row).rowcount
        return changed

    async def pending(self) -> int:
        async with self._store.transaction(_CONTEXT) as txn:
            (count,) = txn.connection.execute("SELECT count(*) FROM search_outbox").fetchone()
        return int(count)
