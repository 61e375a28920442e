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
row matters), attempts, due (unix time before which the row is not retried) and the
last error (an error type, never patient data).
"""

from __future__ import annotations

import sqlite3
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
        error TEXT)""",
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

    async def due(self, now: float, limit: int) -> list[OutboxEntry]:
        async with self._store.transaction(_CONTEXT) as txn:
            rows = txn.connection.execute(
                "SELECT seq, tenant, type, id, version, attempts FROM search_outbox "
                "WHERE due <= ? ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
        return [OutboxEntry(str(seq), t, rtype, rid, v, n) for seq, t, rtype, rid, v, n in rows]

    async def done(self, entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        async with self._store.transaction(_CONTEXT) as txn:
            txn.connection.executemany(
                "DELETE FROM search_outbox WHERE seq = ?", [(int(e.key),) for e in entries]
            )

    async def retry_later(self, entries: Sequence[OutboxEntry], due: float, error: str) -> None:
        if not entries:
            return
        async with self._store.transaction(_CONTEXT) as txn:
            txn.connection.executemany(
                "UPDATE search_outbox SET attempts = attempts + 1, due = ?, error = ? "
                "WHERE seq = ?",
                [(due, error, int(e.key)) for e in entries],
            )

    async def pending(self) -> int:
        async with self._store.transaction(_CONTEXT) as txn:
            (count,) = txn.connection.execute("SELECT count(*) FROM search_outbox").fetchone()
        return int(count)

