"""The search index of the SQLite store: one table per search parameter type.

Every row carries the rid of its resource (resources.rid) and its parameter: the
CRC-32 of the index key ("Observation.code", or "_tag" for the Resource-level ones;
see `param_id`), an integer because it is repeated in every row of two indexes. Each
table's primary key starts with (param, value), so a search for one value of one
parameter is a single index range; the (rid, param) index serves deletes, the other
conditions of a search, :missing and sorting. Tenant, type and deletion are checked on
the resources row.

Query plan: the most selective positive condition (by parameter type) drives the
search as `rid IN (...)`; every other condition is a correlated EXISTS probe on
(rid, param). Without this SQLite scans all resources of the type, as it has no
statistics telling it that one reference value matches a handful of rows.

All functions run on the caller's connection inside the caller's transaction and never
commit. Values are always bound as SQL parameters; table and column names come from
the constants below only.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from fhir_server.storage import sqlite_graph
from fhir_server.storage import sqlite_fulltext
from search.extract import extract
from search.fulltext import FIELD_OF_PARAMETER
from search.query import (
    Clause,
    DateTerm,
    ReferenceTerm,
    SearchQuery,
    SortKey,
    StringTerm,
    TokenTerm,
)
from search.values import iso_utc

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS search_token (
        param INTEGER NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL, rid INTEGER NOT NULL,
        PRIMARY KEY (param, code, system, rid)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS search_token_rid ON search_token (rid, param)",
    """CREATE TABLE IF NOT EXISTS search_string (
        param INTEGER NOT NULL, value TEXT NOT NULL, exact TEXT NOT NULL, rid INTEGER NOT NULL,
        PRIMARY KEY (param, value, exact, rid)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS search_string_rid ON search_string (rid, param)",
    """CREATE TABLE IF NOT EXISTS search_reference (
        param INTEGER NOT NULL, target_id TEXT NOT NULL, target_type TEXT NOT NULL,
        rid INTEGER NOT NULL,
        PRIMARY KEY (param, target_id, target_type, rid)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS search_reference_rid ON search_reference (rid, param)",
    """CREATE TABLE IF NOT EXISTS search_date (
        param INTEGER NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL, rid INTEGER NOT NULL,
        PRIMARY KEY (param, low, high, rid)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS search_date_rid ON search_date (rid, param)",
)

_TABLES = ("search_token", "search_string", "search_reference", "search_date")
_TABLE_OF = {
    "token": "search_token",
    "string": "search_string",
    "reference": "search_reference",
    "date": "search_date",
}
# Above every character, so value < prefix + _TOP holds for all strings starting with prefix.
_TOP = "\U0010ffff"


@lru_cache(maxsize=8192)
def param_id(key: str) -> int:
    """The `param` column value of an index key: a stable 31-bit CRC-32. The keys come
    from the R4 definitions only; tests/test_search_sqlite.py checks they do not collide."""
    return zlib.crc32(key.encode()) & 0x7FFFFFFF


def clear_index(conn: sqlite3.Connection, rid: int) -> None:
    """Remove every index row of `rid` (the resource was deleted)."""
    for table in _TABLES:
        conn.execute(f"DELETE FROM {table} WHERE rid = ?", (rid,))


def replace_index(
    conn: sqlite3.Connection, rid: int, resource_type: str, resource: dict[str, Any]
) -> None:
    """Replace the index rows of `rid` by those of `resource` (of `resource_type`)."""
    if resource.get("resourceType") != resource_type:
        resource = {**resource, "resourceType": resource_type}
    rows = extract(resource)
    clear_index(conn, rid)
    if rows.tokens:
        conn.executemany(
            "INSERT OR IGNORE INTO search_token (param, system, code, rid) VALUES (?, ?, ?, ?)",
            [(param_id(p), system, code, rid) for p, system, code in rows.tokens],
        )
    if rows.strings:
        conn.executemany(
            "INSERT OR IGNORE INTO search_string (param, value, exact, rid) VALUES (?, ?, ?, ?)",
            [(param_id(p), value, exact, rid) for p, value, exact in rows.strings],
        )
    if rows.references:
        conn.executemany(
            "INSERT OR IGNORE INTO search_reference (param, target_type, target_id, rid) "
            "VALUES (?, ?, ?, ?)",
            [(param_id(p), rtype, rid_, rid) for p, rtype, rid_ in rows.references],
        )
    if rows.dates:
        conn.executemany(
            "INSERT OR IGNORE INTO search_date (param, low, high, rid) VALUES (?, ?, ?, ?)",
            [(param_id(p), low, high, rid) for p, low, high in rows.dates],
        )


def _date_condition(
    prefix: str, low: str, high: str, q_low: Any, q_high: Any
) -> tuple[str, list[Any]]:
    """R4 search.html#prefix on ranges: [low, high] is the stored value's range,
    [q_low, q_high] the range of the searched value (both inclusive).

    gt/lt: the value's range reaches beyond the end / before the start of the searched
    range. ge/le: it overlaps [q_low, +inf) / (-inf, q_high], i.e. gt/lt or a common
    instant with the searched range, so a Period that straddles the searched day counts.
    For single instants every prefix reduces to the plain comparison.
    """
    if prefix == "eq":  # the searched range fully contains the value's range
        return f"({low} >= ? AND {high} <= ?)", [q_low, q_high]
    if prefix == "ne":
        return f"({low} < ? OR {high} > ?)", [q_low, q_high]
    if prefix == "gt":
        return f"{high} > ?", [q_high]
    if prefix == "lt":
        return f"{low} < ?", [q_low]
    if prefix == "ge":
        return f"{high} >= ?", [q_low]
    if prefix == "le":
        return f"{low} <= ?", [q_high]
    if prefix == "sa":  # starts after the end of the searched range
        return f"{low} > ?", [q_high]
    if prefix == "eb":  # ends before its start
        return f"{high} < ?", [q_low]
    raise ValueError(f"unknown date prefix {prefix!r}")


def _term_condition(clause: Clause, term: object) -> tuple[str, list[Any]]:
    if isinstance(term, TokenTerm):
        if term.system is None:
            return "code = ?", [term.code]
        if term.code is None:
            return "system = ?", [term.system]
        return "(code = ? AND system = ?)", [term.code, term.system]
    if isinstance(term, StringTerm):
        if clause.modifier == "exact":
            return "(value = ? AND exact = ?)", [term.normalized, term.text]
        if clause.modifier == "contains":
            return "instr(value, ?) > 0", [term.normalized]
        return "(value >= ? AND value < ?)", [term.normalized, term.normalized + _TOP]
    if isinstance(term, ReferenceTerm):
        if term.target_type is None:
            return "target_id = ?", [term.target_id]
        return "(target_id = ? AND target_type = ?)", [term.target_id, term.target_type]
    if isinstance(term, DateTerm):
        return _date_condition(term.prefix, "low", "high", term.low, term.high)
    raise TypeError(f"unknown search term {type(term).__name__}")


def _column_clause(clause: Clause) -> tuple[str, list[Any]]:
    """_id and _lastUpdated, answered from the resources row itself."""
    if clause.missing is not None:
        return ("0" if clause.missing else "1"), []
    conditions: list[str] = []
    args: list[Any] = []
    for term in clause.terms:
        if isinstance(term, TokenTerm):
            conditions.append("r.id = ?")
            args.append(term.code)
        elif isinstance(term, DateTerm):
            column = "r.last_updated"
            sql, values = _date_condition(
                term.prefix, column, column, iso_utc(term.low), iso_utc(term.high)
            )
            conditions.append(sql)
            args.extend(values)
    return "(" + " OR ".join(conditions) + ")", args


def _clause_sql(clause: Clause, drives: bool) -> tuple[str, list[Any]]:
    if clause.code in FIELD_OF_PARAMETER:  # _text, _content: the FTS5 table
        return sqlite_fulltext.condition(sqlite_fulltext.clause_query(clause), drives)
    if clause.code in ("_id", "_lastUpdated"):
        return _column_clause(clause)
    table = _TABLE_OF[clause.param_type]
    key = clause.key
    if clause.missing is not None:
        exists = f"EXISTS (SELECT 1 FROM {table} x WHERE x.rid = r.rid AND x.param = ?)"
        return ("NOT " if clause.missing else "") + exists, [param_id(key)]
    if clause.modifier == "text":  # token :text searches the codes' text and display
        table, key = "search_string", key + ":text"
    elif clause.modifier == "of-type":
        key += ":of-type"
    conditions: list[str] = []
    args: list[Any] = [param_id(key)]
    for term in clause.terms:
        sql, values = _term_condition(clause, term)
        conditions.append(sql)
        args.extend(values)
    where = " OR ".join(conditions)
    if drives:
        return f"r.rid IN (SELECT rid FROM {table} WHERE param = ? AND ({where}))", args
    negate = "NOT " if clause.modifier == "not" else ""
    return (
        f"{negate}EXISTS (SELECT 1 FROM {table} x WHERE x.rid = r.rid AND x.param = ? "
        f"AND ({where}))",
        args,
    )


def _selectivity(clause: Clause) -> int:
    """A rank, lowest first, of how few rows a positive condition is likely to match."""
    if clause.param_type == "reference":
        return 0
    if clause.code in FIELD_OF_PARAMETER:  # an FTS5 match beats a per-row probe of it
        return 2
    if clause.param_type == "token" and clause.modifier is None:
        return 1 if all(getattr(t, "code", None) for t in clause.terms) else 4
    if clause.param_type == "string":
        return 2 if clause.modifier == "exact" else 3 if clause.modifier is None else 6
    if clause.param_type == "date":
        return 5
    return 6


def _driver(query: SearchQuery) -> Clause | None:
    """The clause whose index range drives the search, if any."""
    if any(c.code == "_id" and c.missing is None for c in query.clauses):
        return None  # the (tenant, type, id) key is the best path
    positives = [
        c
        for c in query.clauses
        if c.missing is None and c.modifier != "not" and c.code != "_lastUpdated"
    ]
    return min(positives, key=_selectivity) if positives else None


def _sort_sql(sort: SortKey) -> tuple[str, list[Any]]:
    if sort.code == "_id":
        return "r.id", []
    if sort.code == "_lastUpdated":
        return "r.last_updated", []
    table = _TABLE_OF[sort.param_type]
    aggregate = "MAX" if sort.descending else "MIN"
    # Several values: ascending uses the lowest, descending the highest (search.html#sort).
    column = {"token": "code", "string": "value"}.get(sort.param_type)
    if column is None:  # date
        column = "high" if sort.descending else "low"
    return (
        f"(SELECT {aggregate}(s.{column}) FROM {table} s WHERE s.rid = r.rid AND s.param = ?)",
        [param_id(sort.key)],
    )


def _where(tenant: str, query: SearchQuery) -> tuple[str, list[Any]]:
    driver = _driver(query)
    # With a driving clause, "+" keeps SQLite from choosing the (tenant, type) index.
    plus = "+" if driver is not None else ""
    conditions = [f"{plus}r.tenant = ?", "r.deleted = 0"]
    args: list[Any] = [tenant]
    if query.resource_type is not None:
        conditions.append(f"{plus}r.type = ?")
        args.append(query.resource_type)
    for clause in query.clauses:
        sql, values = _clause_sql(clause, clause is driver)
        conditions.append(sql)
        args.extend(values)
    if query.links or query.types:  # chains, _has, compartment, _type (search.chain)
        link_conditions, link_args = sqlite_graph.links_sql(tenant, query, _where, param_id)
        conditions += link_conditions
        args += link_args
    return " AND ".join(conditions), args


def search_rids(
    conn: sqlite3.Connection, tenant: str, query: SearchQuery
) -> tuple[list[int], int | None]:
    """The rids of the current resources of `tenant` matching `query`, in its sort order
    (by rid when unsorted), its page applied; and the number of matches in all, or None
    when the query asked for `_total=none`."""
    where, args = _where(tenant, query)
    total: int | None = None
    if query.total != "none":
        (total,) = conn.execute(f"SELECT COUNT(*) FROM resources r WHERE {where}", args).fetchone()
    if query.count == 0 or total == 0:
        return [], total

    select_args: list[Any] = []
    order = "r.rid"
    if query.sort is not None:
        sort_sql, select_args = _sort_sql(query.sort)
        direction = "DESC" if query.sort.descending else "ASC"
        # Resources without a value come last in either direction.
        order = f"sort_key IS NULL, sort_key {direction}, r.rid"
        select = f"SELECT r.rid, {sort_sql} AS sort_key"
    else:
        select = "SELECT r.rid"
    sql = f"{select} FROM resources r WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
    params: Sequence[Any] = [*select_args, *args, query.count, query.offset]
    return [row[0] for row in conn.execute(sql, params)], total
