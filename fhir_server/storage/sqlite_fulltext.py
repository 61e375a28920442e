"""The full-text index of the SQLite store: an FTS5 table beside the search index,
ranked by BM25 (search.fulltext describes the documents and the tokens).

One FTS5 row per current resource, its rowid the resource's rid, with two columns:
`narrative` (for `_text`) and `content`, the other strings (`_content` searches both). The store writes it in the
same transaction as the resource (`replace`, `remove`), so the index never lags;
`$reindex` rebuilds it for resources stored before the table existed.

Tokenizer `unicode61 remove_diacritics 2`: case and accents folded (Café = cafe),
ideographs pre-split by search.fulltext.prepare.

The FTS5 table is contentless (content=''): it keeps the index (with positions, for
phrases) but not the text, which cost 215 bytes per resource on the generated data. A
contentless table forgets a row only through the 'delete' command given exactly the
values it indexed (SQLite before 3.43 has no contentless_delete), and deriving them again
from the stored body would break silently whenever search.fulltext.documents changes. So
search_fulltext_docs keeps the indexed text itself, compressed with raw deflate primed by
a dictionary sampled from the file's first texts: about 50 bytes per resource instead of
215.

User input reaches MATCH only as double-quoted phrases of word tokens, bound as a
parameter; it can neither inject SQL nor FTS5 operators.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import zlib
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

FTS_TABLE = """CREATE VIRTUAL TABLE IF NOT EXISTS search_fulltext USING fts5(
        narrative, content, content = '', tokenize = 'unicode61 remove_diacritics 2')"""
SCHEMA: tuple[str, ...] = (
    FTS_TABLE,
    # the exact text each rowid of search_fulltext was indexed with (_pack)
    """CREATE TABLE IF NOT EXISTS search_fulltext_docs (
        rid INTEGER PRIMARY KEY, docs BLOB NOT NULL)""",
    # at most one row: the preset dictionary of _pack, sampled from the file's own text
    """CREATE TABLE IF NOT EXISTS search_fulltext_dictionary (
        id INTEGER PRIMARY KEY, dictionary BLOB NOT NULL)""",
)

# The columns each field searches (the narrative is not repeated in `content`) and their
# bm25() weights.
_COLUMNS = {"narrative": "narrative", "content": "{narrative content}"}
_WEIGHTS = {"narrative": "1.0, 0.0", "content": "1.0, 1.0"}

_PLAIN, _DEFLATED = b"\x00", b"\x01"
_WBITS = -15  # raw deflate: the SQLite page has its own checks
_LEVEL = 6
_SAMPLE_DOCS = 300  # texts kept plain before the dictionary is made from them
_DICTIONARY_BYTES = 32 * 1024  # the deflate window: a longer dictionary is not used

# dictionary id (from its SHA-256) -> (dictionary, a deflater primed with it): shared by
# every file and connection (priming a deflater with 32 KiB costs more than using it)
_primed: dict[int, tuple[bytes, Any]] = {}
_primed_lock = threading.Lock()


def _prime(dictionary_id: int, dictionary: bytes) -> tuple[bytes, Any]:
    primed = (dictionary, zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, zdict=dictionary))
    with _primed_lock:
        _primed[dictionary_id] = primed
    return primed


def _dictionary(conn: sqlite3.Connection) -> tuple[bytes, Any] | None:
    """The file's dictionary, if it has one. Its id alone is read each time (no blob),
    inside the caller's transaction, so a dictionary a rollback removed is never used."""
    row = conn.execute("SELECT id FROM search_fulltext_dictionary").fetchone()
    if row is None:
        return None
    with _primed_lock:
        found = _primed.get(int(row[0]))
    if found is not None:
        return found
    (dictionary,) = conn.execute(
        "SELECT dictionary FROM search_fulltext_dictionary WHERE id = ?", (row[0],)
    ).fetchone()
    return _prime(int(row[0]), bytes(dictionary))


def _sample(conn: sqlite3.Connection) -> tuple[bytes, Any] | None:
    """Once _SAMPLE_DOCS texts are kept plain, the dictionary made of them (the last 32
    KiB), saved in the caller's transaction; else None. The write lock makes sure a file
    gets one dictionary only."""
    (kept,) = conn.execute("SELECT count(*) FROM search_fulltext_docs").fetchone()
    if kept < _SAMPLE_DOCS:
        return None
    texts = conn.execute(
        "SELECT docs FROM search_fulltext_docs ORDER BY rid DESC LIMIT ?", (_SAMPLE_DOCS,)
    ).fetchall()
    dictionary = b"".join(bytes(docs)[1:] for (docs,) in texts)[-_DICTIONARY_BYTES:]
    dictionary_id = int.from_bytes(hashlib.sha256(dictionary).digest()[:8], "big") >> 1
    conn.execute(
        "INSERT INTO search_fulltext_dictionary (id, dictionary) VALUES (?, ?)",
        (dictionary_id, dictionary),
    )
    return _prime(dictionary_id, dictionary)


def _pack(conn: sqlite3.Connection, narrative: str, content: str) -> bytes:
    """The stored form of one row's text: _PLAIN and its UTF-8 JSON, or _DEFLATED and the
    JSON deflated with the file's dictionary as preset (42 bytes instead of 196 on the
    generated data; the body dictionary, JSON rather than text, gave 89)."""
    text = json.dumps([narrative, content], ensure_ascii=False).encode()
    primed = _dictionary(conn) or _sample(conn)
    if primed is None:
        return _PLAIN + text
    deflater = primed[1].copy()
    return _DEFLATED + deflater.compress(text) + deflater.flush()


def _unpack(conn: sqlite3.Connection, docs: bytes) -> tuple[str, str]:
    if docs[:1] == _PLAIN:
        text = docs[1:]
    else:
        primed = _dictionary(conn)
        if primed is None:
            raise RuntimeError("the full-text dictionary is missing from the store file")
        inflater = zlib.decompressobj(_WBITS, zdict=primed[0])
        text = inflater.decompress(docs[1:]) + inflater.flush()
    narrative, content = json.loads(text)
    return narrative, content


def replace(
    conn: sqlite3.Connection, rid: int, resource: dict[str, Any], *, fresh: bool = False
) -> None:
    """Index `resource` (stored as `rid`), replacing what was indexed for it.
    `fresh`: rid was just inserted, so nothing is indexed for it yet."""
    docs = documents(resource)
    if not fresh:
        remove(conn, rid)
    if docs.content or docs.narrative:
        insert_rows(conn, [(rid, docs.narrative, docs.content)])


def insert_rows(
    conn: sqlite3.Connection,
    rows: Sequence[tuple[int, str | None, str | None]],
    table: str = "search_fulltext",
) -> None:
    """Index each (rid, narrative, content), keeping its text in search_fulltext_docs.
    `table`: the FTS5 table, when a migration builds a new one (sqlite_migrate)."""
    texts = [(rid, narrative or "", content or "") for rid, narrative, content in rows]
    conn.executemany(f"INSERT INTO {table} (rowid, narrative, content) VALUES (?, ?, ?)", texts)
    for rid, narrative, content in texts:  # one by one: _pack may sample those before
        conn.execute(
            "INSERT INTO search_fulltext_docs (rid, docs) VALUES (?, ?)",
            (rid, _pack(conn, narrative, content)),
        )


def remove(conn: sqlite3.Connection, rid: int) -> None:
    """Forget what is indexed for `rid`, if anything: the 'delete' command with the
    very text it was indexed with (search_fulltext_docs)."""
    row = conn.execute("SELECT docs FROM search_fulltext_docs WHERE rid = ?", (rid,)).fetchone()
    if row is None:
        return
    narrative, content = _unpack(conn, bytes(row[0]))
    conn.execute(
        "INSERT INTO search_fulltext (search_fulltext, rowid, narrative, content) "
        "VALUES ('delete', ?, ?, ?)",
        (rid, narrative, content),
    )
    conn.execute("DELETE FROM search_fulltext_docs WHERE rid = ?", (rid,))


def clear(conn: sqlite3.Connection) -> None:
    """Forget the whole full-text index (a contentless table refuses DELETE)."""
    conn.execute("INSERT INTO search_fulltext (search_fulltext) VALUES ('delete-all')")
    conn.execute("DELETE FROM search_fulltext_docs")


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
