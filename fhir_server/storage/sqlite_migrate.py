"""Bringing a SQLite store file written by an older fhir-fusion to the current schema, in
place, when the store opens it.

Schema 2 (smaller files, see sqlite_index and sqlite_fulltext) changed three things:
system URIs of token, quantity and composite rows became ids into search_systems; the
FTS5 table became contentless, its text kept compressed in search_fulltext_docs; and the
history indexes lost last_updated (versions_by_instant went; versions_by_tenant and
versions_by_type, in vid order, replace versions_by_time and versions_by_type_time).
Schema 3 stores no rows for Observation's combo-* parameters (sqlite_index.UNIONS): a
file written before keeps searching right, and loses those rows here. It writes date hull
rows only for several values, which needs to know whether a file has hull rows at all
(search_index_state); the hull rows of single values of R4 parameters go.

Each step checks by itself whether it is still to do and runs in its own transaction,
so a migration stopped half-way (the process killed) goes on from the step it was in
at the next open. Progress is logged per step; at 1M resources the whole takes minutes.
Two processes opening an old file at once must not both run the steps (the second
would intern the already interned system ids again, emptying every token search with
a system): the whole migration holds an exclusive lock on a file beside the store's
(`<file>-migrate.lock`); the second opener waits for it and then finds nothing to do.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conformance.definitions import RESOURCE_TYPES, search_parameters
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


@contextmanager
def _step(conn: sqlite3.Connection) -> Iterator[None]:
    """One step's write transaction: committed whole, or rolled back on any error (a
    killed process leaves it uncommitted too), so the step is redone at the next open."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


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
    with _step(conn):
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
    with _step(conn):
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
    logger.info("%s: full-text index contentless (%.1f s)", path, time.monotonic() - began)


_COMBO_SUFFIXES = ("", ":canonical", ":text", ":of-type")
_COMBO_TABLES = (
    "search_token", "search_string", "search_quantity", "search_quantity_range",
    "search_composite",
)  # fmt: skip


def _combo_rows(conn: sqlite3.Connection, path: object) -> bool:
    """Remove the rows of the combo-* parameters (one primary-key range each); whether
    there were any."""
    ids = [
        sqlite_index.param_id(key + suffix)
        for key in sqlite_index.UNIONS
        for suffix in _COMBO_SUFFIXES
    ]
    marks = ",".join("?" * len(ids))
    tables = [
        table for table in _COMBO_TABLES
        if _exists(conn, table)
        and conn.execute(f"SELECT 1 FROM {table} WHERE param IN ({marks}) LIMIT 1", ids).fetchone()
    ]  # fmt: skip
    for table in tables:
        began = time.monotonic()
        with _step(conn):
            removed = conn.execute(f"DELETE FROM {table} WHERE param IN ({marks})", ids).rowcount
        logger.info(
            "%s: %s combo-* rows removed from %s (%.1f s)",
            path, removed, table, time.monotonic() - began,
        )
    return bool(tables)


def _hull_state(conn: sqlite3.Connection) -> str:
    """'complete' when the file's date rows come with hull rows (any of an R4 date
    parameter's), or it has no date rows; else 'absent' (indexed before hull rows)."""
    if conn.execute("SELECT 1 FROM search_date LIMIT 1").fetchone() is None:
        return "complete"
    for key in _date_keys():
        hull = sqlite_index.param_id(key + sqlite_index.HULL)
        found = conn.execute("SELECT 1 FROM search_date WHERE param = ? LIMIT 1", (hull,))
        if found.fetchone() is not None:
            return "complete"
    return "absent"


def _date_keys() -> list[str]:
    """The index keys of the R4 date parameters ("Observation.date")."""
    return [
        f"{resource_type}.{code}"
        for resource_type in RESOURCE_TYPES
        for code, param in search_parameters(resource_type).items()
        if param.type == "date"
    ]


def _record_hull_state(conn: sqlite3.Connection, path: object) -> bool:
    """For a file written before search_index_state: whether its hull rows are there."""
    if not _exists(conn, "search_date"):
        return False
    if _exists(conn, "search_index_state") and conn.execute(
        "SELECT 1 FROM search_index_state WHERE name = 'date_hulls'"
    ).fetchone():
        return False
    state = _hull_state(conn)
    began = time.monotonic()
    removed = 0
    with _step(conn):
        if state == "complete":
            for key in _date_keys():
                removed += conn.execute(
                    "DELETE FROM search_date WHERE param = ? AND (SELECT count(*) FROM "
                    "search_date s WHERE s.rid = search_date.rid AND s.param = ?) = 1",
                    (sqlite_index.param_id(key + sqlite_index.HULL), sqlite_index.param_id(key)),
                ).rowcount
        for statement in sqlite_index.SCHEMA:
            if "search_index_state" in statement and statement.startswith("CREATE"):
                conn.execute(statement)
        conn.execute(
            "INSERT INTO search_index_state (name, value) VALUES ('date_hulls', ?)", (state,)
        )
    logger.info(
        "%s: date hull rows %s, %d of single values removed (%.1f s)",
        path, state, removed, time.monotonic() - began,
    )
    return True


def migrate(conn: sqlite3.Connection, path: Path) -> bool:
    """Bring the file on `conn` (autocommit, no transaction open) to the current schema,
    under the migration lock; whether there was anything to do. A new, empty file has
    nothing to migrate (and takes no lock)."""
    if not _exists(conn, "resources"):
        return False
    with open(f"{path}-migrate.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("%s: another process is migrating this file; waiting for it", path)
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _migrate(conn, path)  # the lock goes with the file's closing


def _migrate(conn: sqlite3.Connection, path: Path) -> bool:
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
    did = _combo_rows(conn, path) or did
    did = _record_hull_state(conn, path) or did
    for index in ("versions_by_instant", "versions_by_time", "versions_by_type_time"):
        if _exists(conn, index):  # the store creates the vid-ordered ones (sqlite.py)
            did = True
            conn.execute(f"DROP INDEX {index}")
    return did
