"""Cached value set expansions in the concept store's SQLite tables (term_expansions,
term_members, term_expansion_ranges), and the type-ahead text filter over them: the part
of terminology.sqlite_store.SQLiteConceptStore that pages expansions.

Type-ahead (`text_query`: words on displays and designations, codes only for a filter
that looks like a code; ranked phrase, whole words, prefixes) takes one of two paths.
An expansion that is exactly the concept ids lo..hi in order (a whole code system loaded
in one go) is answered by the FTS5 index alone, whose
rowids are the concept ids. Any other is a member list; each FTS5 hit is probed in it by
(eid, cid), so the cost follows the number of concepts matching the text.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from search.fulltext import phrases
from terminology.language import pick_display
from terminology.model import Designation
from terminology.store import ExpandedConcept, Expansion, Member, TerminologyError

if TYPE_CHECKING:
    from fhir_server.storage.base import Context
    from fhir_server.storage.sqlite import SQLiteStore

MAX_EXPANSIONS = 200  # cached per tenant; the oldest go first
_IN_CHUNK = 900  # ids per IN (...) list: under the 999 variables of SQLite before 3.32
# Writing more members than this runs in a worker thread: ~100,000 rows take about half a
# second, which would stall every other client on the event loop (break-new finding 14).
THREAD_AT = 20_000

_T = TypeVar("_T")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


async def _to_the_end(work: Callable[[], _T]) -> _T:
    """`work()` in a worker thread, awaited to its end even when this task is cancelled
    meanwhile (the cancellation is raised after it): `work` writes on the writer
    connection, which the enclosing transaction must not roll back or commit under it.
    Only the holder of the store's write lock uses the writer, and the caller holds it."""
    future = asyncio.ensure_future(asyncio.to_thread(work))
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
    result = future.result()
    if cancelled:
        raise asyncio.CancelledError
    return result


@dataclass(frozen=True)
class TextQuery:
    """The FTS5 queries of a type-ahead `filter` (terminology.store, expansion_page):

    - `match`: what is listed: each word a prefix of a word of the display or a
      designation (ideograph runs as phrases, in order); when the filter looks like a code
      (one token with a digit, e.g. `E11`, `E11.2`, `2345-7`), a prefix of the code too.
      Words are not matched against codes otherwise: "type 2 diabetes" must not find
      E10.2 (Type 1 ...) through its code.
    - `phrase`, `near`, `words`: the ranks: the words as a phrase first, then the words
      whole and next to each other in any order ("diabetes type 2" finds "Type 2 diabetes
      mellitus" before "Type 1 diabetes ..., Stage 2"), then all words whole, then
      prefixes only; within a rank the expansion's order (code order)."""

    match: str
    phrase: str
    near: str
    words: str

    @property
    def ranks(self) -> tuple[str, str, str]:
        return self.phrase, self.near, self.words


def _quoted(tokens: Iterable[str]) -> str:
    return '"' + " ".join(token.replace('"', '""') for token in tokens) + '"'


def looks_like_code(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and not any(c.isspace() for c in stripped) and any(
        c.isdigit() for c in stripped)  # fmt: skip


def text_query(text: str) -> TextQuery | None:
    """The FTS5 queries for type-ahead `text`; None when `text` has no letter or digit.
    Only quoted tokens reach MATCH."""
    try:
        found = phrases(text)
    except ValueError as exc:
        raise TerminologyError(400, "too-costly", f"filter: {exc}", "filter") from None
    if not found:
        return None
    prefixes = " AND ".join(_quoted(phrase) + "*" for phrase in found)
    match = f"text : ({prefixes})"
    if looks_like_code(text):
        match = f"{match} OR code : ({prefixes})"
    return TextQuery(
        match,
        "text : " + _quoted(token for phrase in found for token in phrase),
        # FTS5 counts the tokens between the first and the last phrase: one per extra word
        "text : NEAR(" + " ".join(_quoted(phrase) for phrase in found) + f", {len(found) - 1})",
        "text : (" + " AND ".join(_quoted(phrase) for phrase in found) + ")",
    )


def _tiered(
    query: TextQuery,
    offset: int,
    limit: int,
    count: Callable[[str, bool], int],
    page: Callable[[str, bool, int, int], list[tuple[Any, ...]]],
) -> tuple[int, list[tuple[Any, ...]]]:
    """The total and one page of a ranked type-ahead: the ranks are disjoint FTS5 queries
    (phrase; words together NOT phrase; all words whole NOT together; prefixes NOT whole
    words), each counted and paged in the expansion's order on its own, so no request
    sorts all its hits (`filter=a` matches half of a code system). `count(expression,
    last)` and `page(expression, last, skip, take)` run one rank (`last`: the prefix one)."""
    phrase, near, words = query.ranks
    ranks = (phrase, f"({near}) NOT ({phrase})", f"({words}) NOT ({near})",
             f"({query.match}) NOT ({words})")  # fmt: skip
    rows: list[tuple[Any, ...]] = []
    total, skip, want = 0, offset, limit
    for n, expression in enumerate(ranks):
        last = n == len(ranks) - 1
        found = count(expression, last)
        total += found
        if want != 0 and skip < found:
            take = found - skip if want < 0 else min(want, found - skip)
            rows += page(expression, last, skip, take)
            want = want if want < 0 else want - take
            skip = 0
        else:
            skip = max(0, skip - found)
    return total, rows


class ExpansionTables:
    """Expansion methods of the SQLite concept store (mixed into SQLiteConceptStore,
    which provides the store, the schema and the connections)."""

    _store: SQLiteStore

    async def _ensure(self, ctx: Context) -> None:
        raise NotImplementedError

    async def _reader(self, ctx: Context) -> sqlite3.Connection:
        raise NotImplementedError


    @staticmethod
    def _clear_expansions(conn: sqlite3.Connection, tenant: str) -> None:
        conn.execute(
            "DELETE FROM term_members WHERE eid IN (SELECT eid FROM term_expansions "
            "WHERE tenant=?)", (tenant,))  # fmt: skip
        conn.execute(
            "DELETE FROM term_expansion_ranges WHERE eid IN (SELECT eid FROM term_expansions "
            "WHERE tenant=?)", (tenant,))  # fmt: skip
        conn.execute("DELETE FROM term_expansions WHERE tenant=?", (tenant,))

    async def sync_mark(self, ctx: Context) -> str | None:
        row = (await self._reader(ctx)).execute(
            "SELECT mark FROM term_sync WHERE tenant=?", (ctx.tenant,)
        ).fetchone()
        return row[0] if row else None

    async def set_sync_mark(self, ctx: Context, mark: str) -> None:
        await self._ensure(ctx)
        async with self._store.transaction(ctx) as txn:
            txn.connection.execute(
                "INSERT INTO term_sync (tenant, mark) VALUES (?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET mark=excluded.mark", (ctx.tenant, mark))

    async def clear_expansions(self, ctx: Context) -> None:
        await self._ensure(ctx)
        async with self._store.transaction(ctx) as txn:
            self._clear_expansions(txn.connection, ctx.tenant)

    async def expansion(self, ctx: Context, key: str) -> Expansion | None:
        conn = await self._reader(ctx)
        row = conn.execute(
            "SELECT eid, key, total, created_at FROM term_expansions WHERE tenant=? AND key=?",
            (ctx.tenant, key),
        ).fetchone()
        return Expansion(*row) if row else None

    async def save_expansion(
        self, ctx: Context, key: str, members: Iterable[Member]
    ) -> Expansion:
        await self._ensure(ctx)
        listed = members if isinstance(members, list) else list(members)
        async with self._store.transaction(ctx) as txn:
            conn = txn.connection
            if len(listed) < THREAD_AT:
                return self._write_expansion(conn, ctx.tenant, key, listed)
            return await _to_the_end(
                lambda: self._write_expansion(conn, ctx.tenant, key, listed))

    @staticmethod
    def _write_expansion(
        conn: sqlite3.Connection, tenant: str, key: str, members: list[Member]
    ) -> Expansion:
        """Replace the expansion cached under `key`, inside the caller's transaction."""
        old = conn.execute(
            "SELECT eid FROM term_expansions WHERE tenant=? AND key=?", (tenant, key)
        ).fetchone()
        if old:
            conn.execute("DELETE FROM term_members WHERE eid=?", old)
            conn.execute("DELETE FROM term_expansions WHERE eid=?", old)
        stale = conn.execute(
            "SELECT eid FROM term_expansions WHERE tenant=? ORDER BY eid DESC LIMIT -1 "
            "OFFSET ?", (tenant, MAX_EXPANSIONS - 1)).fetchall()  # fmt: skip
        for (eid,) in stale:
            conn.execute("DELETE FROM term_members WHERE eid=?", (eid,))
            conn.execute("DELETE FROM term_expansions WHERE eid=?", (eid,))
        created = utc_now()
        eid = conn.execute(
            "INSERT INTO term_expansions (tenant, key, total, created_at) VALUES (?, ?, 0, ?)",
            (tenant, key, created),
        ).lastrowid
        total, lo, last, run = 0, None, None, True

        def rows() -> Iterator[tuple[Any, ...]]:
            nonlocal total, lo, last, run
            for pos, m in enumerate(members):
                total += 1
                if m.cid is None or m.display is not None or (
                    last is not None and m.cid != last + 1
                ):
                    run = False
                lo = m.cid if lo is None else lo
                last = m.cid
                yield (eid, pos, m.cid, m.system, m.version, m.code, m.display)

        conn.executemany(
            "INSERT INTO term_members (eid, pos, cid, system, version, code, display) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows(),
        )
        conn.execute("UPDATE term_expansions SET total=? WHERE eid=?", (total, eid))
        conn.execute("DELETE FROM term_expansion_ranges WHERE eid=?", (eid,))  # a reused eid
        if run and total:
            conn.execute("INSERT INTO term_expansion_ranges (eid, lo, hi) VALUES (?, ?, ?)",
                         (eid, lo, last))  # fmt: skip
        assert eid is not None
        return Expansion(eid, key, total, created)

    async def expansion_page(
        self,
        ctx: Context,
        expansion: Expansion,
        *,
        text: str | None = None,
        active_only: bool = False,
        offset: int = 0,
        count: int | None = None,
        language: str | None = None,
    ) -> tuple[int, list[ExpandedConcept]]:
        conn = await self._reader(ctx)
        limit = -1 if count is None else count
        if text is not None and text.strip():
            return self._text_page(conn, expansion, text, active_only, offset, limit, language)
        join, where = "", "m.eid=?"
        if active_only:
            join = "LEFT JOIN term_concepts c ON c.cid=m.cid"
            where += " AND (m.cid IS NULL OR c.active=1)"
        if not active_only:
            total = expansion.total
        else:
            (total,) = conn.execute(
                f"SELECT count(*) FROM term_members m {join} WHERE {where}", (expansion.eid,)
            ).fetchone()
        if count == 0:
            return total, []
        rows = conn.execute(
            f"SELECT m.cid, m.system, m.version, m.code, m.display FROM term_members m {join} "
            f"WHERE {where} ORDER BY m.pos LIMIT ? OFFSET ?",
            (expansion.eid, limit, offset),
        ).fetchall()
        return total, self._expanded(conn, rows, language)

    def _text_page(
        self,
        conn: sqlite3.Connection,
        expansion: Expansion,
        text: str,
        active_only: bool,
        offset: int,
        limit: int,
        language: str | None,
    ) -> tuple[int, list[ExpandedConcept]]:
        """A page of the members matching type-ahead `text`, driven by the FTS5 index: each
        hit is probed in the expansion by (eid, cid), so the cost follows the number of
        concepts matching, not the size of the expansion. The total comes with the page
        (a window count over the hits)."""
        query = text_query(text)
        if query is None:
            return 0, []
        span = conn.execute(
            "SELECT lo, hi FROM term_expansion_ranges WHERE eid=?", (expansion.eid,)
        ).fetchone()
        if span is not None and not active_only:
            return self._range_page(conn, query, span, offset, limit, language)
        active = "CROSS JOIN term_concepts c ON c.cid=m.cid AND c.active=1" if active_only else ""
        like = f"%{text.strip()}%"

        def hits(last: bool) -> str:
            return (
                "SELECT m.pos, m.cid, m.system, m.version, m.code, m.display "
                # INDEXED BY: without statistics the planner would scan the expansion per hit
                "FROM term_text t CROSS JOIN term_members m INDEXED BY term_members_by_cid "
                f"ON m.eid=? AND m.cid=t.rowid {active} "
                "WHERE term_text MATCH ? "
                + ("UNION ALL SELECT pos, cid, system, version, code, display FROM term_members "
                   "WHERE eid=? AND cid IS NULL AND display LIKE ?" if last else "")
            )  # a concept of a system the store does not hold has no FTS row: LIKE on display

        def count(expression: str, last: bool) -> int:
            args = [expansion.eid, expression, *((expansion.eid, like) if last else ())]
            return int(conn.execute(f"SELECT count(*) FROM ({hits(last)})", args).fetchone()[0])

        def page(expression: str, last: bool, skip: int, take: int) -> list[tuple[Any, ...]]:
            args = [expansion.eid, expression, *((expansion.eid, like) if last else ())]
            return conn.execute(
                f"WITH h AS ({hits(last)}) SELECT cid, system, version, code, display FROM h "
                "ORDER BY pos LIMIT ? OFFSET ?", [*args, take, skip],
            ).fetchall()  # fmt: skip

        total, rows = _tiered(query, offset, limit, count, page)
        if limit == 0:
            return total, []
        return total, self._expanded(conn, rows, language)

    def _range_page(
        self,
        conn: sqlite3.Connection,
        query: TextQuery,
        span: tuple[int, int],
        offset: int,
        limit: int,
        language: str | None,
    ) -> tuple[int, list[ExpandedConcept]]:
        """Type-ahead over an expansion that is the concept ids lo..hi in order: the FTS5
        index answers both the count and the page (its rowids are the concept ids, in
        order), without touching the member list."""
        where = "term_text MATCH ? AND rowid BETWEEN ? AND ?"

        def count(expression: str, last: bool) -> int:
            return int(conn.execute(f"SELECT count(*) FROM term_text WHERE {where}",
                                    (expression, *span)).fetchone()[0])  # fmt: skip

        def page(expression: str, last: bool, skip: int, take: int) -> list[tuple[Any, ...]]:
            return conn.execute(
                f"SELECT rowid, NULL, NULL, NULL, NULL FROM term_text WHERE {where} "
                "ORDER BY rowid LIMIT ? OFFSET ?", (expression, *span, take, skip),
            ).fetchall()  # fmt: skip

        total, rows = _tiered(query, offset, limit, count, page)
        if limit == 0:
            return total, []
        return total, self._expanded(conn, rows, language)

    async def expansion_find(
        self, ctx: Context, expansion: Expansion, system: str | None, code: str
    ) -> ExpandedConcept | None:
        conn = await self._reader(ctx)
        rows: list[tuple[Any, ...]] = []
        if system is not None:
            cids = [row[0] for row in conn.execute(
                "SELECT c.cid FROM term_systems s JOIN term_concepts c ON c.sid=s.sid "
                "WHERE s.tenant=? AND s.url=? AND s.state='ready' AND c.code=?",
                (ctx.tenant, system, code))]  # fmt: skip
            for cid in cids:
                rows += conn.execute(
                    "SELECT cid, system, version, code, display FROM term_members INDEXED BY "
                    "term_members_by_cid WHERE eid=? AND cid=? LIMIT 1",
                    (expansion.eid, cid)).fetchall()  # fmt: skip
            if not rows:
                rows = conn.execute(
                    "SELECT cid, system, version, code, display FROM term_members "
                    "WHERE eid=? AND code=? AND system=? LIMIT 1",
                    (expansion.eid, code, system)).fetchall()  # fmt: skip
        else:  # no system given: the code alone (ValueSet $validate-code with only `code`)
            rows = conn.execute(
                "SELECT m.cid, m.system, m.version, m.code, m.display FROM term_members m "
                "LEFT JOIN term_concepts c ON c.cid=m.cid WHERE m.eid=? AND "
                "(m.code=? OR c.code=?) LIMIT 1",
                (expansion.eid, code, code)).fetchall()  # fmt: skip
        found = self._expanded(conn, rows[:1], None)
        return found[0] if found else None

    def _expanded(
        self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]], language: str | None
    ) -> list[ExpandedConcept]:
        cids = [row[0] for row in rows if row[0] is not None]
        info: dict[int, tuple[Any, ...]] = {}
        designations: dict[int, list[Designation]] = {}
        systems: dict[int, tuple[str, str]] = {}
        # In chunks: SQLite binds at most 999 (before 3.32) or 250,000 variables a statement,
        # and a whole large value set (a :in search) comes through here.
        for start in range(0, len(cids), _IN_CHUNK):
            part = cids[start:start + _IN_CHUNK]
            marks = ",".join("?" * len(part))
            for cid, sid, code, display, active in conn.execute(
                f"SELECT cid, sid, code, display, active FROM term_concepts WHERE cid IN ({marks})",
                part,
            ):
                info[cid] = (sid, code, display, active)
            for cid, lang, use_system, use_code, value in conn.execute(
                f"SELECT cid, language, use_system, use_code, value FROM term_designations "
                f"WHERE cid IN ({marks}) ORDER BY rowid", part,
            ):  # fmt: skip
                designations.setdefault(cid, []).append(
                    Designation(value, lang, use_system, use_code)
                )
        if info:
            sids = {v[0] for v in info.values()}
            marks = ",".join("?" * len(sids))
            for sid, url, version in conn.execute(
                f"SELECT sid, url, version FROM term_systems WHERE sid IN ({marks})", list(sids)
            ):
                systems[sid] = (url, version)
        out: list[ExpandedConcept] = []
        for cid, system, version, code, display in rows:
            if cid is None or cid not in info:
                out.append(ExpandedConcept(system or "", version, code or "", display))
                continue
            sid, code, concept_display, active = info[cid]
            url, version = systems[sid]
            found = tuple(designations.get(cid, ()))
            # a display the ValueSet gives for the concept wins over the code system's
            shown = pick_display(display or concept_display, found, language)
            out.append(ExpandedConcept(url, version or None, code, shown, bool(active), found))
        return out
