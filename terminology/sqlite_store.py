"""The concept store (terminology.store.ConceptStore) in the SQLite file of the resources.

Tables of its own, created idempotently on first use:

    term_systems      one row per loaded url+version (state 'loading' until the swap)
    term_concepts     code, display, definition, active, properties (JSON) per concept
    term_designations language / use / value per concept
    term_parents      (sid, child, parent) codes: the is-a edges
    term_text         FTS5, rowid = concept id: columns `code`, and `text` (display and
                      designations), for the type-ahead `filter` of $expand (unicode61
                      remove_diacritics 2: case and accents folded; ideographs and kana
                      split per character beforehand)
    term_expansions / term_members   cached expansions: members in order, by concept id
                      (their methods: terminology.sqlite_expansions.ExpansionTables)

Writes go through the resource store's transactions (its writer connection, its lock);
reads use the connection its plain reads use. Statements run on the event loop thread
like the resource store's own: each is an index probe or a bounded scan. What decides
answers without touching storage (the load loop, filter plan and checks, subsumption) is
terminology.concept_rules, shared with MongoDB.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from search.fulltext import prepare
from terminology.concept_rules import (
    HEADER_FIELDS,
    ConceptRules,
    properties_from_json,
    properties_json,
    same_origin,
)
from terminology.model import CodeSystemHeader, Concept, Designation
from terminology.regex_filter import select_rows
from terminology.sqlite_expansions import ExpansionTables, utc_now
from terminology.store import (
    BATCH,
    ConceptDetail,
    Filter,
    SystemInfo,
)

if TYPE_CHECKING:
    from fhir_server.storage.base import Context
    from fhir_server.storage.sqlite import SQLiteStore

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS term_systems (
        sid INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        url TEXT NOT NULL,
        version TEXT NOT NULL,
        state TEXT NOT NULL,
        header TEXT NOT NULL,
        count INTEGER NOT NULL DEFAULT 0,
        source TEXT NOT NULL,
        loaded_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS term_systems_by_url ON term_systems (tenant, url, version)",
    """CREATE TABLE IF NOT EXISTS term_concepts (
        cid INTEGER PRIMARY KEY,
        sid INTEGER NOT NULL,
        code TEXT NOT NULL,
        display TEXT,
        definition TEXT,
        active INTEGER NOT NULL,
        properties TEXT,
        UNIQUE (sid, code))""",
    """CREATE TABLE IF NOT EXISTS term_designations (
        cid INTEGER NOT NULL,
        language TEXT,
        use_system TEXT,
        use_code TEXT,
        value TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS term_designations_by_cid ON term_designations (cid)",
    """CREATE TABLE IF NOT EXISTS term_parents (
        sid INTEGER NOT NULL,
        child TEXT NOT NULL,
        parent TEXT NOT NULL,
        PRIMARY KEY (sid, child, parent)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS term_parents_by_parent ON term_parents (sid, parent, child)",
    # prefix indexes for one to three characters: type-ahead asks for short prefixes; the
    # code in a column of its own, matched only when the filter looks like a code
    """CREATE VIRTUAL TABLE IF NOT EXISTS term_text USING fts5(
        code, text, tokenize='unicode61 remove_diacritics 2', prefix='1 2 3')""",
    """CREATE TABLE IF NOT EXISTS term_expansions (
        eid INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        key TEXT NOT NULL,
        total INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (tenant, key))""",
    """CREATE TABLE IF NOT EXISTS term_members (
        eid INTEGER NOT NULL,
        pos INTEGER NOT NULL,
        cid INTEGER,
        system TEXT,
        version TEXT,
        code TEXT,
        display TEXT,
        PRIMARY KEY (eid, pos)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS term_members_by_cid ON term_members (eid, cid)",
    # an expansion whose members are exactly the concept ids lo..hi in order (a whole code
    # system, loaded in one go): its type-ahead pages come from the FTS5 index alone
    """CREATE TABLE IF NOT EXISTS term_expansion_ranges (
        eid INTEGER PRIMARY KEY, lo INTEGER NOT NULL, hi INTEGER NOT NULL)""",
    # what terminology.service.sync last saw of the CodeSystem/ValueSet resources
    "CREATE TABLE IF NOT EXISTS term_sync (tenant TEXT PRIMARY KEY, mark TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS term_members_by_code ON term_members (eid, code, system)",
)

# Which load of a url (and version) answers (README "Terminology", precedence): content the
# operator loaded or the server ships before a client's CodeSystem resource, then complete
# content before fragment/example/not-present, then the newest.
_PRECEDENCE = (
    "(source <> 'load'), "
    "(coalesce(json_extract(header, '$.content'), 'complete') <> 'complete'), sid DESC"
)


def _system_row(row: tuple[Any, ...]) -> SystemInfo:
    sid, url, version, header, count, source = row
    h = json.loads(header)
    return SystemInfo(
        sid, url, version or None, h["name"], h.get("title"), h.get("status", "active"),
        h.get("content", "complete"), h.get("hierarchy_meaning"), h.get("copyright"),
        h.get("language"), count, source,
    )  # fmt: skip


def search_text(concept: Concept) -> str:
    """What the type-ahead filter matches as words: display and designations."""
    parts = [concept.display or ""]
    parts.extend(d.value for d in concept.designations)
    return prepare(" ".join(dict.fromkeys(p for p in parts if p)))


def _rebuild_text_index(conn: sqlite3.Connection) -> None:
    """A term_text of an earlier release (one column: code and words together) rebuilt
    with the code in a column of its own; once per database, in the schema transaction."""
    columns = [d[0] for d in conn.execute("SELECT * FROM term_text LIMIT 0").description]
    if columns != ["text"]:
        return
    conn.execute("DROP TABLE term_text")
    conn.execute(next(st for st in SCHEMA if "term_text USING fts5" in st))
    designations: dict[int, list[Designation]] = {}
    for cid, value in conn.execute("SELECT cid, value FROM term_designations ORDER BY rowid"):
        designations.setdefault(cid, []).append(Designation(value))
    conn.executemany(
        "INSERT INTO term_text (rowid, code, text) VALUES (?, ?, ?)",
        ((cid, prepare(code), search_text(Concept(code, display,
                                                  designations=tuple(designations.get(cid, ())))))
         for cid, code, display in conn.execute(
             "SELECT cid, code, display FROM term_concepts ORDER BY cid").fetchall()),
    )  # fmt: skip


class SQLiteConceptStore(ExpansionTables, ConceptRules):
    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._ready = False
        self._properties: dict[int, frozenset[str]] = {}  # sid -> its property names

    # -- connections -----------------------------------------------------------

    async def _ensure(self, ctx: Context) -> None:
        if self._ready:
            return
        async with self._store.transaction(ctx) as txn:
            for statement in SCHEMA:
                txn.connection.execute(statement)
            _rebuild_text_index(txn.connection)
        self._ready = True

    async def _reader(self, ctx: Context) -> sqlite3.Connection:
        await self._ensure(ctx)
        # the reader, or the writer inside the task's batch (sees its uncommitted writes)
        return self._store._reads()  # noqa: SLF001 - same storage backend, tables of its own

    # -- loading ---------------------------------------------------------------

    async def _start_load(
        self, ctx: Context, header: CodeSystemHeader, version: str, source: str
    ) -> int:
        header_json = json.dumps({f: getattr(header, f) for f in HEADER_FIELDS})
        async with self._store.transaction(ctx) as txn:
            sid = txn.connection.execute(
                "INSERT INTO term_systems (tenant, url, version, state, header, source, "
                "loaded_at) VALUES (?, ?, ?, 'loading', ?, ?, ?)",
                (ctx.tenant, header.url, version, header_json, source, utc_now()),
            ).lastrowid
        assert sid is not None
        return sid

    async def _finish_load(
        self, ctx: Context, url: str, version: str, sid: int, source: str
    ) -> tuple[int, list[int]]:
        async with self._store.transaction(ctx) as txn:
            conn = txn.connection
            (count,) = conn.execute("SELECT count(*) FROM term_concepts WHERE sid=?",
                                    (sid,)).fetchone()  # fmt: skip
            # a load replaces only a load, a CodeSystem resource only its own earlier
            # versions' concepts: a client's CodeSystem never drops the operator's or the
            # shipped release, nor another client's CodeSystem of the same url
            old = [row[0] for row in conn.execute(
                "SELECT sid, source FROM term_systems WHERE tenant=? AND url=? AND version=? "
                "AND sid<>?", (ctx.tenant, url, version, sid),
            ) if same_origin(row[1], source)]  # fmt: skip
            conn.execute("UPDATE term_systems SET state='ready', count=? WHERE sid=?",
                         (count, sid))  # fmt: skip
            conn.execute("UPDATE term_systems SET state='dropped' WHERE sid IN (%s)"
                         % ",".join("?" * len(old)), old)  # fmt: skip
            self._clear_expansions(conn, ctx.tenant)
        await self._drop_sids(ctx, old)
        return count, old

    async def _write_batch(self, ctx: Context, sid: int, batch: list[Concept]) -> int:
        designations = 0
        async with self._store.transaction(ctx) as txn:
            conn = txn.connection
            for concept in batch:
                props = properties_json(concept)
                existing = conn.execute(
                    "SELECT cid FROM term_concepts WHERE sid=? AND code=?", (sid, concept.code)
                ).fetchone()
                if existing:  # a repeated code replaces the earlier one
                    self._delete_concepts(conn, sid, [existing[0]], [concept.code])
                cid = conn.execute(
                    "INSERT INTO term_concepts (sid, code, display, definition, active, "
                    "properties) VALUES (?, ?, ?, ?, ?, ?)",
                    (sid, concept.code, concept.display, concept.definition,
                     int(concept.active), props),
                ).lastrowid  # fmt: skip
                if concept.designations:
                    conn.executemany(
                        "INSERT INTO term_designations (cid, language, use_system, use_code, "
                        "value) VALUES (?, ?, ?, ?, ?)",
                        [(cid, d.language, d.use_system, d.use_code, d.value)
                         for d in concept.designations],
                    )  # fmt: skip
                    designations += len(concept.designations)
                if concept.parents:
                    conn.executemany(
                        "INSERT OR IGNORE INTO term_parents (sid, child, parent) VALUES (?, ?, ?)",
                        [(sid, concept.code, p) for p in concept.parents],
                    )
                conn.execute("INSERT INTO term_text (rowid, code, text) VALUES (?, ?, ?)",
                             (cid, prepare(concept.code), search_text(concept)))  # fmt: skip
        return designations

    @staticmethod
    def _delete_concepts(
        conn: sqlite3.Connection, sid: int, cids: list[int], codes: list[str]
    ) -> None:
        for start in range(0, len(cids), 500):
            part = cids[start:start + 500]
            marks = ",".join("?" * len(part))
            conn.execute(f"DELETE FROM term_text WHERE rowid IN ({marks})", part)
            conn.execute(f"DELETE FROM term_designations WHERE cid IN ({marks})", part)
            conn.execute(f"DELETE FROM term_concepts WHERE cid IN ({marks})", part)
        for start in range(0, len(codes), 500):
            part2 = codes[start:start + 500]
            marks = ",".join("?" * len(part2))
            conn.execute(f"DELETE FROM term_parents WHERE sid=? AND child IN ({marks})",
                         [sid, *part2])  # fmt: skip

    async def _drop_sids(self, ctx: Context, sids: list[int]) -> None:
        """Delete the concepts of dropped loads, a batch per transaction."""
        for sid in sids:
            while True:
                async with self._store.transaction(ctx) as txn:
                    conn = txn.connection
                    rows = conn.execute(
                        "SELECT cid, code FROM term_concepts WHERE sid=? LIMIT ?", (sid, BATCH)
                    ).fetchall()
                    if not rows:
                        conn.execute("DELETE FROM term_parents WHERE sid=?", (sid,))
                        conn.execute("DELETE FROM term_systems WHERE sid=?", (sid,))
                        break
                    self._delete_concepts(conn, sid, [r[0] for r in rows], [])

    async def drop_code_system(
        self, ctx: Context, url: str, version: str | None, source: str | None = None
    ) -> bool:
        await self._ensure(ctx)
        async with self._store.transaction(ctx) as txn:
            conn = txn.connection
            sids = [row[0] for row in conn.execute(
                "SELECT sid FROM term_systems WHERE tenant=? AND url=? AND version=? "
                "AND (? IS NULL OR source=?)",
                (ctx.tenant, url, version or "", source, source),
            )]  # fmt: skip
            conn.executemany("UPDATE term_systems SET state='dropped' WHERE sid=?",
                             [(s,) for s in sids])  # fmt: skip
            self._clear_expansions(conn, ctx.tenant)
        await self._drop_sids(ctx, sids)
        return bool(sids)

    # -- reading ---------------------------------------------------------------

    _SYSTEM_COLUMNS = "sid, url, version, header, count, source"

    async def system(
        self, ctx: Context, url: str, version: str | None = None
    ) -> SystemInfo | None:
        conn = await self._reader(ctx)
        if version is None:
            row = conn.execute(
                f"SELECT {self._SYSTEM_COLUMNS} FROM term_systems WHERE tenant=? AND url=? "
                f"AND state='ready' ORDER BY {_PRECEDENCE} LIMIT 1",
                (ctx.tenant, url),
            ).fetchone()
        else:
            row = conn.execute(
                f"SELECT {self._SYSTEM_COLUMNS} FROM term_systems WHERE tenant=? AND url=? "
                f"AND version=? AND state='ready' ORDER BY {_PRECEDENCE} LIMIT 1",
                (ctx.tenant, url, version),
            ).fetchone()
        return _system_row(row) if row else None

    async def systems(self, ctx: Context, url: str | None = None) -> list[SystemInfo]:
        conn = await self._reader(ctx)
        sql = f"SELECT {self._SYSTEM_COLUMNS} FROM term_systems WHERE tenant=? AND state='ready'"
        args: list[Any] = [ctx.tenant]
        if url is not None:
            sql += " AND url=?"
            args.append(url)
        return [_system_row(row) for row in conn.execute(sql + " ORDER BY url, sid DESC", args)]

    async def concept(self, ctx: Context, system: SystemInfo, code: str) -> ConceptDetail | None:
        conn = await self._reader(ctx)
        row = conn.execute(
            "SELECT cid, display, definition, active, properties FROM term_concepts "
            "WHERE sid=? AND code=?",
            (system.sid, code),
        ).fetchone()
        if row is None:
            return None
        cid, display, definition, active, props = row
        designations = tuple(
            Designation(value, language, use_system, use_code)
            for language, use_system, use_code, value in conn.execute(
                "SELECT language, use_system, use_code, value FROM term_designations "
                "WHERE cid=? ORDER BY rowid", (cid,))
        )  # fmt: skip
        parents = tuple(r[0] for r in conn.execute(
            "SELECT parent FROM term_parents WHERE sid=? AND child=?", (system.sid, code)))
        children = tuple(r[0] for r in conn.execute(
            "SELECT child FROM term_parents WHERE sid=? AND parent=?", (system.sid, code)))
        concept = Concept(code, display, definition, designations, parents,
                          properties_from_json(props), bool(active))  # fmt: skip
        return ConceptDetail(concept, children)

    async def codes_to_ids(
        self, ctx: Context, system: SystemInfo, codes: Iterable[str]
    ) -> dict[str, int]:
        conn = await self._reader(ctx)
        wanted = list(dict.fromkeys(codes))
        found: dict[str, int] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            marks = ",".join("?" * len(part))
            for cid, code in conn.execute(
                f"SELECT cid, code FROM term_concepts WHERE sid=? AND code IN ({marks})",
                [system.sid, *part],
            ):
                found[code] = cid
        return found

    async def descendants(self, ctx: Context, system: SystemInfo, code: str) -> set[str]:
        conn = await self._reader(ctx)
        return {row[0] for row in conn.execute(
            "WITH RECURSIVE d(code) AS (SELECT child FROM term_parents WHERE sid=?1 AND parent=?2 "
            "UNION SELECT p.child FROM term_parents p JOIN d ON p.sid=?1 AND p.parent=d.code) "
            "SELECT code FROM d", (system.sid, code))} - {code}  # fmt: skip

    async def ancestors(self, ctx: Context, system: SystemInfo, code: str) -> set[str]:
        conn = await self._reader(ctx)
        return {row[0] for row in conn.execute(
            "WITH RECURSIVE a(code) AS (SELECT parent FROM term_parents WHERE sid=?1 AND child=?2 "
            "UNION SELECT p.parent FROM term_parents p JOIN a ON p.sid=?1 AND p.child=a.code) "
            "SELECT code FROM a", (system.sid, code))} - {code}  # fmt: skip

    async def select(
        self, ctx: Context, system: SystemInfo, filters: Iterable[Filter]
    ) -> list[int]:
        conn = await self._reader(ctx)
        plan = await self._plan(ctx, system, list(filters), inline_codes=500)
        clauses: list[str] = ["sid=?"]
        args: list[Any] = [system.sid]
        for codes in plan.code_lists:
            clauses.append(f"code IN ({','.join('?' * len(codes)) or 'NULL'})")
            args.extend(codes)
        for display in plan.displays:
            clauses.append("display=?")
            args.append(display)
        rows = conn.execute(
            f"SELECT cid, code, display, properties FROM term_concepts "
            f"WHERE {' AND '.join(clauses)} ORDER BY cid",
            args,
        ).fetchall()
        return await select_rows(rows, plan.post, plan.keeps)

    async def _property_names(self, ctx: Context, system: SystemInfo) -> frozenset[str]:
        conn = await self._reader(ctx)
        return frozenset(row[0] for row in conn.execute(
            "SELECT DISTINCT j.key FROM term_concepts, json_each(properties) j "
            "WHERE sid=? AND properties IS NOT NULL", (system.sid,)))  # fmt: skip
