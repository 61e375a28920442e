"""The full-text index of the SQLite store: an FTS5 table beside the search index,
ranked by BM25 (search.fulltext describes the documents and the tokens).

One FTS5 row per current resource, its rowid the resource's rid, with two columns:
`narrative` (for `_text`) and `content`, the other strings (`_content` searches both). The store writes it in the
same transaction as the resource (`replace`, `remove`), so the index never lags;
`$reindex` rebuilds it for resources stored before the table existed.

Tokenizer `unicode61 remove_diacritics 2`: case and accents folded (Café = cafe),
ideographs pre-split by search.fulltext.prepare. The table keeps its own copy of the
text (FTS5 phrase queries need positions, and a contentless table cannot forget an
updated row before SQLite 3.43), which costs roughly the size of the resources'
strings again.

User input reaches MATCH only as double-quoted phrases of word tokens, bound as a
parameter; it can neither inject SQL nor FTS5 operators.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from search.fulltext import (
    FIELD_OF_PARAMETER,
    Change,
    Hit,
    TextQuery,
    documents,
    text_query,
)

if TYPE_CHECKING:
    from search.query import Clause

MIN_SQLITE = (3, 27, 0)  # unicode61 remove_diacritics 2


def _check_sqlite() -> None:
    version = tuple(int(part) for part in sqlite3.sqlite_version.split("."))
    if version < MIN_SQLITE:
        raise RuntimeError(
            f"SQLite {sqlite3.sqlite_version} is too old for the full-text index; "
            f"fhir-fusion needs {'.'.join(map(str, MIN_SQLITE))} or later with FTS5"
        )
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("CREATE VIRTUAL TABLE probe USING fts5(x)")
    except sqlite3.OperationalError:
        raise RuntimeError(
            f"SQLite {sqlite3.sqlite_version} was built without FTS5, which the "
            "full-text index (_text, _content) needs"
        ) from None
    finally:
        probe.close()


_check_sqlite()

SCHEMA: tuple[str, ...] = (
    """CREATE VIRTUAL TABLE IF NOT EXISTS search_fulltext USING fts5(
        narrative, content, tokenize = 'unicode61 remove_diacritics 2')""",
)

# The columns each field searches (the narrative is not repeated in `content`) and their
# bm25() weights.
_COLUMNS = {"narrative": "narrative", "content": "{narrative content}"}
_WEIGHTS = {"narrative": "1.0, 0.0", "content": "1.0, 1.0"}


def replace(
    conn: sqlite3.Connection, rid: int, resource: dict[str, Any], *, fresh: bool = False
) -> None:
    """Index `resource` (stored as `rid`), replacing what was indexed for it.
    `fresh`: rid was just inserted, so nothing is indexed for it yet."""
    docs = documents(resource)
    if not fresh:
        conn.execute("DELETE FROM search_fulltext WHERE rowid = ?", (rid,))
    if docs.content or docs.narrative:
        conn.execute(
            "INSERT INTO search_fulltext (rowid, narrative, content) VALUES (?, ?, ?)",
            (rid, docs.narrative, docs.content),
        )


def remove(conn: sqlite3.Connection, rid: int) -> None:
    conn.execute("DELETE FROM search_fulltext WHERE rowid = ?", (rid,))


def _phrase(phrase: tuple[str, ...]) -> str:
    # tokens hold letters, digits and marks only; doubling quotes is belt and braces
    return '"' + " ".join(token.replace('"', '""') for token in phrase) + '"'


def match_expression(query: TextQuery) -> str | None:
    """The FTS5 MATCH text of `query`, or None when it can match nothing (no words)."""
    alternatives = [
        " AND ".join(f"{_COLUMNS[query.field]} : {_phrase(phrase)}" for phrase in phrases)
        for phrases in query.alternatives
        if phrases
    ]
    if not alternatives:
        return None
    return " OR ".join(f"({alternative})" for alternative in alternatives)


def condition(query: TextQuery, drives: bool = True) -> tuple[str, list[Any]]:
    """A WHERE condition on `resources r` for sqlite_index: r.rid is among the matches."""
    expression = match_expression(query)
    if expression is None:
        return "0", []
    if drives:
        return (
            "r.rid IN (SELECT rowid FROM search_fulltext WHERE search_fulltext MATCH ?)",
            [expression],
        )
    return (
        "EXISTS (SELECT 1 FROM search_fulltext WHERE search_fulltext MATCH ? "
        "AND rowid = r.rid)",
        [expression],
    )


def score_sql(query: TextQuery) -> tuple[str, list[Any]]:
    """An expression on `resources r` giving the BM25 relevance of r to `query`
    (lower is better, as FTS5's bm25() returns it), for `_sort=_score`."""
    expression = match_expression(query) or '""'
    return (
        f"(SELECT bm25(search_fulltext, {_WEIGHTS[query.field]}) FROM search_fulltext "
        "WHERE search_fulltext MATCH ? AND rowid = r.rid)",
        [expression],
    )


def ranked(
    conn: sqlite3.Connection,
    tenant: str,
    query: TextQuery,
    resource_type: str | None = None,
    limit: int = 100,
) -> list[Hit]:
    """The current resources matching `query`, best first (BM25; ties by rid)."""
    expression = match_expression(query)
    if expression is None:
        return []
    type_condition = "AND r.type = ?" if resource_type is not None else ""
    args: list[Any] = [expression, tenant]
    if resource_type is not None:
        args.append(resource_type)
    rows = conn.execute(
        f"SELECT r.type, r.id, bm25(search_fulltext, {_WEIGHTS[query.field]}) AS score "
        "FROM search_fulltext JOIN resources r ON r.rid = search_fulltext.rowid "
        f"WHERE search_fulltext MATCH ? AND r.tenant = ? AND r.deleted = 0 {type_condition} "
        "ORDER BY score, r.rid LIMIT ?",
        [*args, limit],
    ).fetchall()
    return [Hit(rtype, rid, -score) for rtype, rid, score in rows]


class SQLiteFullText:
    """search.fulltext.FullTextIndex on a SQLite store's connection. The store itself
    keeps the index current inside its write transactions; `index` and `remove` are
    for callers that manage documents on their own (and for the interface's tests)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _rid(self, tenant: str, resource_type: str, resource_id: str) -> int | None:
        row = self._conn.execute(
            "SELECT rid FROM resources WHERE tenant = ? AND type = ? AND id = ?",
            (tenant, resource_type, resource_id),
        ).fetchone()
        return None if row is None else int(row[0])

    async def index(self, tenant: str, resource: dict[str, Any]) -> None:
        rid = self._rid(tenant, resource["resourceType"], resource["id"])
        if rid is None:
            raise KeyError(f"{resource['resourceType']}/{resource['id']} is not stored")
        replace(self._conn, rid, resource)

    async def remove(self, tenant: str, resource_type: str, resource_id: str) -> None:
        rid = self._rid(tenant, resource_type, resource_id)
        if rid is not None:
            remove(self._conn, rid)

    async def apply(self, tenant: str, changes: Sequence[Change]) -> list[str | None]:
        """Each change as `index`/`remove` would make it. The store holds one row per
        resource, so a change older than the stored version is skipped (the store's own
        write already indexed the newer one)."""
        results: list[str | None] = []
        for change in changes:
            row = self._conn.execute(
                "SELECT rid, version FROM resources WHERE tenant = ? AND type = ? AND id = ?",
                (tenant, change.resource_type, change.id),
            ).fetchone()
            if row is None:
                results.append(f"{change.resource_type}/{change.id} is not stored")
                continue
            rid, version = row
            if change.version >= version:
                if change.resource is None:
                    remove(self._conn, rid)
                else:
                    replace(self._conn, rid, change.resource)
            results.append(None)
        return results

    async def close(self) -> None:
        """The connection belongs to the store, which closes it."""

    async def query(
        self,
        tenant: str,
        text: TextQuery,
        resource_type: str | None = None,
        limit: int = 100,
    ) -> list[Hit]:
        return ranked(self._conn, tenant, text, resource_type, limit)


def clause_query(clause: Clause) -> TextQuery:
    """The TextQuery of a parsed `_text` or `_content` clause (its terms' texts are
    the comma-separated alternatives)."""
    return text_query(FIELD_OF_PARAMETER[clause.code], [term.text for term in clause.terms])
