"""Index maintenance in the SQLite store: the state of custom SearchParameters and the
resumable `$reindex` jobs, both kept in the store's own file.

`search_param_state` holds, per SearchParameter resource, the version the index was last
rebuilt for; a version newer than that is pending (search.custom). `reindex_jobs` holds
each job's scope, its cursor (the last rid rebuilt) and counts: a batch commits its
index rows and its cursor together, so a job killed at any point continues after the
last committed batch and never rebuilds a resource twice.

Like the rest of the storage layer, every function runs on the caller's connection in
the caller's transaction.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_server import jsonutil
from fhir_server.storage import sqlite_bodies, sqlite_fulltext, sqlite_index
from search import custom

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS search_param_state (
        resource_id TEXT PRIMARY KEY,
        indexed_version INTEGER)""",
    """CREATE TABLE IF NOT EXISTS reindex_jobs (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        types TEXT NOT NULL,
        status TEXT NOT NULL,
        cursor INTEGER NOT NULL DEFAULT 0,
        processed INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL,
        params TEXT NOT NULL,
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        finished_at TEXT)""",
    # bumped in the transaction that writes or deletes a SearchParameter or completes a
    # reindex job: the change marker every process on the file compares with the one
    # its registry was loaded at (sync_registry)
    """CREATE TABLE IF NOT EXISTS search_param_generation (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        n INTEGER NOT NULL)""",
)

RUNNING, COMPLETED = "in-progress", "completed"


@dataclass(frozen=True)
class Job:
    id: int
    tenant: str
    types: tuple[str, ...]  # () = every type
    status: str  # in-progress | completed
    cursor: int
    processed: int
    total: int
    started_at: str
    updated_at: str
    finished_at: str | None


_JOB_COLUMNS = (
    "id, tenant, types, status, cursor, processed, total, started_at, updated_at, finished_at"
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _job(row: tuple[Any, ...]) -> Job:
    jid, tenant, types, status, cursor, processed, total, started, updated, finished = row
    return Job(
        jid, tenant, tuple(t for t in types.split(",") if t), status, cursor, processed,
        total, started, updated, finished,
    )  # fmt: skip


# -- custom SearchParameters ------------------------------------------------------

# (database file, generation) search.custom.REGISTRY was last loaded from. One registry
# per process (search.custom), so one marker per process.
_loaded: list[tuple[str, int] | None] = [None]


def _bump(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO search_param_generation (id, n) VALUES (1, 1) "
        "ON CONFLICT (id) DO UPDATE SET n = n + 1"
    )


def _generation(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT n FROM search_param_generation WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def sync_registry(conn: sqlite3.Connection, path: str) -> bool:
    """Reload search.custom.REGISTRY from the file at `path` when another process (a
    second `serve`, an offline `reindex`) changed its SearchParameters or their indexed
    state since this process loaded it (break-new finding 7): one indexed row read.
    Called inside every write transaction (which holds the file's write lock, so a
    resource is indexed with the definitions committed before it) and before each
    search parses its parameters. True when it reloaded."""
    marker = (path, _generation(conn))
    if _loaded[0] == marker:
        return False
    load_registry(conn, path)
    return True


def track(conn: sqlite3.Connection, resource_type: str, stored: dict[str, Any]) -> None:
    """Called on every write: a SearchParameter is checked (400 when it cannot be
    indexed) and registered as pending."""
    if resource_type != "SearchParameter":
        return
    version = int(stored.get("meta", {}).get("versionId", 1))
    param = custom.definition(stored, version)
    if param is None:
        custom.REGISTRY.forget(str(stored["id"]))
        return
    conn.execute(
        "INSERT OR IGNORE INTO search_param_state (resource_id, indexed_version) VALUES (?, NULL)",
        (param.resource_id,),
    )
    custom.REGISTRY.define(param)
    _bump(conn)


def untrack(conn: sqlite3.Connection, resource_type: str, resource_id: str) -> None:
    if resource_type == "SearchParameter":
        conn.execute("DELETE FROM search_param_state WHERE resource_id = ?", (resource_id,))
        custom.REGISTRY.forget(resource_id)
        _bump(conn)


def load_registry(conn: sqlite3.Connection, path: str | None = None) -> None:
    """Fill search.custom.REGISTRY from the SearchParameters stored in this file (`path`
    names it for sync_registry)."""
    generation = _generation(conn)
    rows = conn.execute(
        "SELECT r.id, r.version, r.body, s.indexed_version FROM resources r "
        "JOIN search_param_state s ON s.resource_id = r.id "
        "WHERE r.type = 'SearchParameter' AND r.deleted = 0"
    ).fetchall()
    params: list[tuple[custom.CustomParam, bool]] = []
    for resource_id, version, body, indexed_version in rows:
        try:
            param = custom.definition(jsonutil.loads(sqlite_bodies.decode(conn, body)), version)
        except Exception:  # noqa: BLE001 - a definition stored before a stricter check
            continue
        if param is not None:
            params.append((param, indexed_version == version))
    custom.REGISTRY.replace_all(params)
    _loaded[0] = None if path is None else (path, generation)


# -- reindex jobs -------------------------------------------------------------------


def _scope(types: tuple[str, ...]) -> tuple[str, list[Any]]:
    if not types:
        return "", []
    return f" AND type IN ({','.join('?' * len(types))})", list(types)


def start_job(conn: sqlite3.Connection, tenant: str, types: tuple[str, ...]) -> Job:
    """A new job over the current resources of `tenant` of `types` (all when empty), or
    the unfinished job with the same scope, which then continues where it stopped."""
    key = ",".join(sorted(types))
    row = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM reindex_jobs WHERE tenant = ? AND types = ? "
        "AND status = ? ORDER BY id DESC LIMIT 1",
        (tenant, key, RUNNING),
    ).fetchone()
    if row is not None:
        return _job(row)
    scope, args = _scope(types)
    (total,) = conn.execute(
        f"SELECT count(*) FROM resources WHERE tenant = ?{scope}", [tenant, *args]
    ).fetchone()
    # the SearchParameter versions this job makes searchable once it completes
    pending = [[p.resource_id, p.version] for p in custom.REGISTRY.pending(types or None)]
    now = _now()
    cursor = conn.execute(
        "INSERT INTO reindex_jobs (tenant, types, status, total, params, started_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (tenant, key, RUNNING, total, json.dumps(pending), now, now),
    )
    return get_job(conn, tenant, int(cursor.lastrowid or 0)) or _missing(cursor.lastrowid)


def _missing(job_id: object) -> Job:
    raise LookupError(f"reindex job {job_id} vanished")


def get_job(conn: sqlite3.Connection, tenant: str, job_id: int) -> Job | None:
    row = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM reindex_jobs WHERE tenant = ? AND id = ?", (tenant, job_id)
    ).fetchone()
    return None if row is None else _job(row)


def unfinished_jobs(conn: sqlite3.Connection, tenant: str) -> list[Job]:
    rows = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM reindex_jobs WHERE tenant = ? AND status = ? ORDER BY id",
        (tenant, RUNNING),
    ).fetchall()
    return [_job(row) for row in rows]


def run_batch(conn: sqlite3.Connection, job: Job, size: int) -> tuple[Job, list[tuple[str, int]]]:
    """Rebuild the index rows (search parameters, custom ones, full text) of the next
    `size` resources of the job and advance its cursor. When the job completes, returns
    the SearchParameter versions it made searchable (to mark in the registry after the
    transaction commits)."""
    scope, args = _scope(job.types)
    rows = conn.execute(
        f"SELECT rid, type, deleted, body FROM resources WHERE tenant = ? AND rid > ?{scope} "
        "ORDER BY rid LIMIT ?",
        [job.tenant, job.cursor, *args, size],
    ).fetchall()
    cursor = job.cursor
    for rid, resource_type, deleted, body in rows:
        if deleted or body is None:
            sqlite_index.clear_index(conn, rid)
            sqlite_fulltext.remove(conn, rid)
        else:
            resource = jsonutil.loads(sqlite_bodies.decode(conn, body))
            sqlite_index.replace_index(conn, rid, resource_type, resource)
            sqlite_fulltext.replace(conn, rid, resource)
        cursor = rid
    now = _now()
    done = len(rows) < size
    indexed: list[tuple[str, int]] = []
    if done:
        (params,) = conn.execute(
            "SELECT params FROM reindex_jobs WHERE id = ?", (job.id,)
        ).fetchone()
        for resource_id, version in json.loads(params):
            current = conn.execute(
                "SELECT version FROM resources WHERE type = 'SearchParameter' AND id = ? "
                "AND deleted = 0",
                (resource_id,),
            ).fetchone()
            if current is not None and current[0] == version:
                conn.execute(
                    "UPDATE search_param_state SET indexed_version = ? WHERE resource_id = ?",
                    (version, resource_id),
                )
                indexed.append((resource_id, version))
        if indexed:
            _bump(conn)
    conn.execute(
        "UPDATE reindex_jobs SET cursor = ?, processed = processed + ?, status = ?, "
        "updated_at = ?, finished_at = ? WHERE id = ?",
        (cursor, len(rows), COMPLETED if done else RUNNING, now, now if done else None, job.id),
    )
    updated = get_job(conn, job.tenant, job.id) or _missing(job.id)
    return updated, indexed
