"""Bringing a SQLite store file written by an older fhir-fusion to the current schema, in
place, when the store opens it.

Schema 2 (smaller files, see sqlite_index and sqlite_fulltext) changed three things:
system URIs of token, quantity and composite rows became ids into search_systems; the
FTS5 table became contentless, its text kept compressed in search_fulltext_docs; and the
versions_by_instant index went (the newest version row has the latest instant).

Each step checks by itself whether it is still to do and runs in its own transaction,
so a migration stopped half-way (the process killed) goes on from the step it was in
at the next open. Progress is logged per step; at 1M resources the whole takes minutes.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from fhir_server.storage import sqlite_fulltext, sqlite_index

logger = logging.getLogger(__name__)

# table -> its columns in the old file, with the system columns to intern
_INTERNED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "search_token": (("param", "code", "system", "rid"), ("system",)),
    "search_quantity": (("param", "code", "value", "system", "rid"), ("system",)),
    "search_quantity_range": (
        ("param", "code", "low", "high", "system", "rid"), ("system",)
    ),
    "search_composite": (
        ("param", "code", "system", "v_code", "v_low", "v_high", "v_system", "rid"),
        ("system", "v_system"),
    ),
}
_FTS_BATCH = 20_000


def _exists(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_schema WHERE name = ?", (name,)).fetchone()
    return found is not None


def _declared(conn: sqlite3.Connection, table: str, column: str) -> str | None:
    for row in conn.execute(f"PRAGMA table_info({table})"):
        if row[1] == column:
            return str(row[2]).upper()
    return None


def _create_statement(table: str) -> str:
    head = f"CREATE TABLE IF NOT EXISTS {table} ("
    for statement in sqlite_index.SCHEMA:
        if statement.startswith(head):
            return statement
    raise LookupError(f"no CREATE TABLE for {table} in sqlite_index.SCHEMA")


def _intern_table(conn: sqlite3.Connection, path: object, table: str) -> None:
    columns, systems = _INTERNED[table]
    began = time.monotonic()
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_create_statement("search_systems"))
        for column in systems:
            conn.execute(
                f"INSERT OR IGNORE INTO search_systems (uri) SELECT DISTINCT {column} FROM {table}"
            )
        new = f"{table}_v2"
        conn.execute(f"DROP TABLE IF EXISTS {new}")
        conn.execute(
            _create_statement(table).replace(f"IF NOT EXISTS {table} (", f"{new} (", 1)
        )
        selected = ", ".join(
            f"(SELECT id FROM search_systems WHERE uri = t.{c})" if c in systems else f"t.{c}"
            for c in columns
        )
        moved = conn.execute(
            f"INSERT INTO {new} ({', '.join(columns)}) SELECT {selected} FROM {table} t"
        ).rowcount
        conn.execute(f"DROP TABLE {table}")  # its (rid, param) index goes with it
        conn.execute(f"ALTER TABLE {new} RENAME TO {table}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    logger.info(
        "%s: %s rows of %s now hold system ids (%.1f s)",
        path, moved, table, time.monotonic() - began,
    )


def _contentless(conn: sqlite3.Connection) -> bool:
    (sql,) = conn.execute(
        "SELECT sql FROM sqlite_schema WHERE name = 'search_fulltext'"
    ).fetchone()
    return "content = ''" in sql or "content=''" in sql


def _fulltext(conn: sqlite3.Connection, path: object) -> None:
    """The FTS5 table rebuilt contentless from its own stored text (no re-extraction, so
    it indexes exactly what it did)."""
    began = time.monotonic()
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DROP TABLE IF EXISTS search_fulltext_v2")
        conn.execute(
            sqlite_fulltext.FTS_TABLE.replace(
                "IF NOT EXISTS search_fulltext USING", "search_fulltext_v2 USING", 1
            )
        )
        conn.execute("DROP TABLE IF EXISTS search_fulltext_docs")
        for statement in sqlite_fulltext.SCHEMA[1:]:
            conn.execute(statement)
        (total,) = conn.execute("SELECT count(*) FROM search_fulltext").fetchone()
        done, after = 0, None
        while True:
            rows = conn.execute(
                "SELECT rowid, narrative, content FROM search_fulltext "
                + ("WHERE rowid > ? " if after is not None else "")
                + "ORDER BY rowid LIMIT ?",
                ([after] if after is not None else []) + [_FTS_BATCH],
            ).fetchall()
            if not rows:
                break
            sqlite_fulltext.insert_rows(conn, rows, "search_fulltext_v2")
            done += len(rows)
            after = rows[-1][0]
            logger.info("%s: full-text index rebuilt contentless, %d of %d", path, done, total)
        conn.execute("DROP TABLE search_fulltext")
        conn.execute("ALTER TABLE search_fulltext_v2 RENAME TO search_fulltext")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    logger.info("%s: full-text index contentless (%.1f s)", path, time.monotonic() - began)


def migrate(conn: sqlite3.Connection, path: object) -> bool:
    """Bring the file on `conn` (autocommit, no transaction open) to the current schema;
    whether there was anything to do. A new, empty file has nothing to migrate."""
    did = False
    for table in _INTERNED:
        if _exists(conn, table) and _declared(conn, table, "system") == "TEXT":
            if not did:
                logger.info("%s: migrating the search index to schema 2", path)
            did = True
            _intern_table(conn, path, table)
    if _exists(conn, "search_fulltext") and not _contentless(conn):
        did = True
        _fulltext(conn, path)
    if _exists(conn, "versions_by_instant"):
        did = True
        conn.execute("DROP INDEX versions_by_instant")
    return did
