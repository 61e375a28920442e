"""Contained resources in the SQLite search index (R4 search.html#contained).

Each resource found in a stored resource's `contained` gets a row of its own in the
`contained` table, with the columns a search reads on `resources` (tenant, type, id,
deleted, last_updated), so the search SQL of sqlite_index runs unchanged on either
table. Its rid is negative (the next below the smallest in use): its index rows go into
the same search_* tables as those of top-level resources, and a rid can never name both.
A search of top-level resources joins the index rows to `resources`, where no negative
rid exists, so contained resources never leak into it; a search with `_contained=true`
joins them to `contained` instead.

The contained rows of a resource are rewritten with it and removed with it, so they
always carry the container's tenant and last_updated. `id` is the local id ("med1"),
`body` the contained resource's own JSON.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from conformance.definitions import RESOURCE_TYPES
from fhir_server import jsonutil
from fhir_server.storage.base import StoredResource

TABLE = "contained"

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS contained (
        rid INTEGER PRIMARY KEY, container INTEGER NOT NULL, tenant TEXT NOT NULL,
        type TEXT NOT NULL, id TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
        last_updated TEXT NOT NULL, body BLOB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS contained_of ON contained (container)",
    # a search of contained resources of one type, and a chain's walk of them
    "CREATE INDEX IF NOT EXISTS contained_live ON contained (tenant, type, deleted)",
)


def resources_of(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The contained resources of `resource` that can be indexed: a known type and an id
    (R4 requires both; anything else is skipped)."""
    contained = resource.get("contained")
    if type(contained) is not list:
        return []
    return [
        item
        for item in contained
        if type(item) is dict
        and item.get("resourceType") in RESOURCE_TYPES
        and type(item.get("id")) is str
        and item["id"]
    ]


def store(
    conn: sqlite3.Connection,
    container: int,
    items: Sequence[dict[str, Any]],
    index: Callable[[int, str, dict[str, Any]], None],
) -> None:
    """Rows for the contained resources `items` of the resource `container` (a
    resources.rid, whose row is already written); `index(rid, type, resource)` writes a
    contained resource's index rows."""
    found = conn.execute(
        "SELECT tenant, last_updated FROM resources WHERE rid = ?", (container,)
    ).fetchone()
    if found is None:  # an index built outside the store (tests): no tenant to give
        found = ("default", "")
    tenant, last_updated = found
    for item in items:
        cursor = conn.execute(
            "INSERT INTO contained (rid, container, tenant, type, id, last_updated, body) "
            "VALUES ((SELECT min(0, coalesce(min(rid), 0)) - 1 FROM contained), "
            "?, ?, ?, ?, ?, ?)",
            (container, tenant, item["resourceType"], item["id"], last_updated,
             jsonutil.dumps(item)),
        )  # fmt: skip
        rid = cursor.lastrowid
        assert rid is not None
        index(rid, item["resourceType"], item)


def clear(
    conn: sqlite3.Connection, container: int, clear_rows: Callable[[int], None]
) -> None:
    """Remove the contained rows of `container` and, through `clear_rows(rid)`, their
    index rows."""
    rids = [rid for (rid,) in conn.execute(
        "SELECT rid FROM contained WHERE container = ?", (container,)
    )]  # fmt: skip
    if not rids:
        return
    for rid in rids:
        clear_rows(rid)
    conn.execute("DELETE FROM contained WHERE container = ?", (container,))


def stored(conn: sqlite3.Connection, rids: Sequence[int]) -> dict[int, StoredResource]:
    """The contained resources with these (negative) rids, as StoredResources whose
    `container` names the resource they are in."""
    if not rids:
        return {}
    marks = ",".join("?" * len(rids))
    rows = conn.execute(
        "SELECT c.rid, c.type, c.id, c.body, r.type, r.id, r.version, r.last_updated "
        f"FROM contained c JOIN resources r ON r.rid = c.container WHERE c.rid IN ({marks})",
        list(rids),
    ).fetchall()
    return {
        rid: StoredResource(
            rtype, local_id, version, last_updated, False, body, "PUT",
            container=(container_type, container_id),
        )
        for rid, rtype, local_id, body, container_type, container_id, version, last_updated
        in rows
    }  # fmt: skip


def chain_branch(param: int, target_type: str, where: str) -> tuple[str, list[Any]]:
    """A SELECT of the rids of resources whose reference parameter `param` points at a
    contained resource of `target_type` inside themselves ("#x") that matches `where`
    (a condition on alias r, compiled for the contained table without a driving index
    list): a chain evaluated inside contained resources (search.html#contained).

    The contained resources of the type drive (contained_live), each then checked and
    joined to its container's reference rows; CROSS JOIN keeps SQLite from walking every
    reference row of the parameter instead. With no contained resource of the type this
    is one index probe."""
    return (
        "SELECT x.rid FROM contained r CROSS JOIN search_reference x "
        "ON x.rid = r.container AND x.param = ? AND x.target_type = r.type "
        "AND x.target_id = '#' || r.id "
        f"WHERE r.type = ? AND {where}"
    ), [param, target_type]
