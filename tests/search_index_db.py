"""A search index on a bare SQLite file, for the search tests: resources go in through
sqlite_index.replace_index, searches come out as ids (no REST, no store)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from fhir_server import jsonutil
from fhir_server.storage import sqlite_index
from search.query import SearchQuery, parse_search

RESOURCES_TABLE = """CREATE TABLE IF NOT EXISTS resources (
  rid INTEGER PRIMARY KEY, tenant TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
  version INTEGER NOT NULL, last_updated TEXT NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0, body BLOB,
  UNIQUE (tenant, type, id))"""


class SearchDB:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute(RESOURCES_TABLE)
        for statement in sqlite_index.SCHEMA:
            self.conn.execute(statement)

    def add(
        self, resource: dict[str, Any], last_updated: str = "2026-12-04T16:40:00.000000+00:00"
    ) -> int:
        """Store `resource` (decimals as Decimal, as jsonutil.loads gives them)."""
        cursor = self.conn.execute(
            "INSERT INTO resources (tenant, type, id, version, last_updated, deleted, body) "
            "VALUES ('default', ?, ?, 1, ?, 0, ?)",
            (resource["resourceType"], resource["id"], last_updated, jsonutil.dumps(resource)),
        )
        rid = cursor.lastrowid
        assert rid is not None
        sqlite_index.replace_index(self.conn, rid, resource["resourceType"], resource)
        return rid

    def add_json(self, resource: dict[str, Any], **kwargs: Any) -> int:
        """Store a resource written with floats: via JSON text, so numbers become Decimal."""
        return self.add(jsonutil.loads(json.dumps(resource).encode()), **kwargs)

    def ids_of(self, rids: list[int]) -> list[str]:
        """The ids of these rids; a contained resource's as "<container id>#<local id>"."""
        id_of = dict(self.conn.execute("SELECT rid, id FROM resources"))
        id_of.update(self.conn.execute(
            "SELECT c.rid, r.id || '#' || c.id FROM contained c JOIN resources r "
            "ON r.rid = c.container"
        ))  # fmt: skip
        return [id_of[rid] for rid in rids]

    def page(self, query: SearchQuery) -> sqlite_index.IndexPage:
        return sqlite_index.search_page(self.conn, "default", query)

    def search(self, resource_type: str | None, params: list[tuple[str, str]]) -> list[str]:
        """The ids found, in result order (all of them: _count 1000 unless given)."""
        if not any(name == "_count" for name, _ in params):
            params = [*params, ("_count", "1000")]
        return self.ids_of(self.page(parse_search(resource_type, params)).rids)

    def found(self, resource_type: str | None, query: str) -> set[str]:
        """The ids found for a query string such as "birthdate=ge2010&gender=male"."""
        return set(self.search(resource_type, parse_qs(query)))

    def plan(self, resource_type: str, params: list[tuple[str, str]]) -> str:
        """EXPLAIN QUERY PLAN of the page query, as one text."""
        query = parse_search(resource_type, params)
        hulls = sqlite_index._hull_keys(self.conn, query)  # noqa: SLF001 - white-box check
        where, args = sqlite_index._where("default", query, hulls)  # noqa: SLF001
        rows = self.conn.execute(
            f"EXPLAIN QUERY PLAN SELECT r.rid FROM resources r WHERE {where} ORDER BY r.rid",
            args,
        ).fetchall()
        return "\n".join(str(row[-1]) for row in rows)


def parse_qs(query: str) -> list[tuple[str, str]]:
    """Split "a=1&b=2" into pairs, decoding %XX the way a URL decoder would."""
    from urllib.parse import parse_qsl

    return parse_qsl(query, keep_blank_values=True)
