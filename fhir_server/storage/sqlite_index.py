"""The search index of the SQLite store: one table per search parameter type.

Every row carries the rid of its resource (resources.rid) and its parameter: the
CRC-32 of the index key ("Observation.code", or "_tag" for the Resource-level ones;
see `param_id`), an integer because it is repeated in every row of two indexes. Each
table's primary key starts with (param, value), so a search for one value of one
parameter is a single index range; the (rid, param) index serves deletes, the other
conditions of a search, :missing and sorting. Tenant, type and deletion are checked on
the resources row.

System URIs (token, quantity and composite `system` columns, and the target type of a
reference first component of a composite) are interned in search_systems: the rows hold
its small integer id, and a search compares with `(SELECT id ... WHERE uri = ?)`, which
SQLite evaluates once. "http://loinc.org" in every row cost more than the code did.

Number rows are [low, high] REAL ranges (a decimal is low = high), quantity rows
(code, value, system) with the canonical UCUM form under its own param
("<key>:canonical", search.units), composite rows the first component's (code, system)
and the second's (v_code, v_low, v_high, v_system); uri values are token rows.

Paging is keyset paging (search.cursor): a page is what sorts after the cursor's sort
values and rid, so page 1,000 costs what page 1 costs and concurrent writes never make
a page skip or repeat a resource. `_offset` is still honoured when no cursor is given.

Query plan: the most selective positive condition (by parameter type) drives the
search as `rid IN (...)`; every other condition is a correlated EXISTS probe on
(rid, param). Without this SQLite scans all resources of the type, as it has no
statistics telling it that one reference value matches a handful of rows.

All functions run on the caller's connection inside the caller's transaction and never
commit. Values are always bound as SQL parameters; table and column names come from
the constants below only.
"""

from __future__ import annotations

import contextvars
import sqlite3
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

from conformance.definitions import RESOURCE_TYPES, search_parameters
from fhir_server.errors import FHIRError
from fhir_server.storage import sqlite_contained, sqlite_graph
from fhir_server.storage import sqlite_fulltext
from search import custom
from search.extract import IDENTIFIER, IndexRows, extract, resolve_local_references
from search.fulltext import FIELD_OF_PARAMETER
from search.chain import ChainClause, HasClause
from search import cursor as cursors
from search.query import (
    Clause,
    CompositeTerm,
    DateTerm,
    NumberTerm,
    QuantityTerm,
    ReferenceTerm,
    SearchQuery,
    SortKey,
    StringTerm,
    TokenTerm,
    UriTerm,
)
from search.values import DATE_MAX, DATE_MIN, iso_utc

# The width class of a date row: hex digits of its width in units of 2**20 us (~1 s),
# 1 (under 16 s) ... 11 (open-ended). An expression, so existing files get the index
# without a new column.
_SPAN = "length(printf('%x', (high >> 20) - (low >> 20)))"
_SPAN_CLASSES = range(1, 12)
# Key suffix of the rows spanning all dates of a parameter in a resource, written only
# where it has two values or more: a single value is its own hull (see _date_driver).
HULL = ":hull"

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS search_systems (
        id INTEGER PRIMARY KEY, uri TEXT NOT NULL UNIQUE)""",
    """CREATE TABLE IF NOT EXISTS search_token (
        param INTEGER NOT NULL, code TEXT NOT NULL, system INTEGER NOT NULL,
        rid INTEGER NOT NULL,
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
    # dates by the order of magnitude of their width, then start: see _date_driver
    f"CREATE INDEX IF NOT EXISTS search_date_span ON search_date (param, {_SPAN}, low)",
    # dates by their end: a page sorted by -date walks it newest first (_sorted_walk)
    "CREATE INDEX IF NOT EXISTS search_date_high ON search_date (param, high)",
    """CREATE TABLE IF NOT EXISTS search_number (
        param INTEGER NOT NULL, low REAL NOT NULL, high REAL NOT NULL, rid INTEGER NOT NULL,
        PRIMARY KEY (param, low, high, rid)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS search_number_rid ON search_number (rid, param)",
    """CREATE TABLE IF NOT EXISTS search_quantity (
        param INTEGER NOT NULL, code TEXT NOT NULL, value REAL NOT NULL,
        system INTEGER NOT NULL, rid INTEGER NOT NULL,
        PRIMARY KEY (param, code, value, system, rid)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS search_quantity_rid ON search_quantity (rid, param)",
    # Range values of quantity parameters (context-quantity): [low, high] like numbers
    """CREATE TABLE IF NOT EXISTS search_quantity_range (
        param INTEGER NOT NULL, code TEXT NOT NULL, low REAL NOT NULL, high REAL NOT NULL,
        system INTEGER NOT NULL, rid INTEGER NOT NULL,
        PRIMARY KEY (param, code, low, high, system, rid)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS search_quantity_range_rid ON search_quantity_range (rid, param)",
    # v_low / v_high have no declared type: quantity values stay REAL, date ranges INTEGER
    """CREATE TABLE IF NOT EXISTS search_composite (
        param INTEGER NOT NULL, code TEXT NOT NULL, system INTEGER NOT NULL,
        v_code TEXT NOT NULL, v_low NOT NULL, v_high NOT NULL, v_system INTEGER NOT NULL,
        rid INTEGER NOT NULL,
        PRIMARY KEY (param, code, system, v_code, v_low, v_high, v_system, rid)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS search_composite_rid ON search_composite (rid, param)",
    # (tenant, type, deleted) then rowid: an unsorted search reads its page as a seek past
    # the cursor's rid in rid order, without sorting every match of the type; and a
    # count checks each matching rid in this small index, not in the table of bodies
    # facts about the index of this file: ('date_hulls', 'complete') when every resource
    # with several values of a date parameter has its hull row (files indexed before hull
    # rows existed lack it; sqlite_migrate decides for them before this default applies)
    """CREATE TABLE IF NOT EXISTS search_index_state (
        name TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    "INSERT OR IGNORE INTO search_index_state (name, value) VALUES ('date_hulls', 'complete')",
    "DROP INDEX IF EXISTS resources_by_type",
    "CREATE INDEX IF NOT EXISTS resources_live ON resources (tenant, type, deleted)",
    *sqlite_contained.SCHEMA,
)

_TABLES = (
    "search_token", "search_string", "search_reference", "search_date", "search_number",
    "search_quantity", "search_composite", "search_quantity_range",
)  # fmt: skip
_TABLE_OF = {
    "token": "search_token",
    "string": "search_string",
    "reference": "search_reference",
    "date": "search_date",
    "number": "search_number",
    "quantity": "search_quantity",
    "uri": "search_token",
    "composite": "search_composite",
}
# Types whose terms carry their own param (a canonical quantity has another key).
_PARAM_PER_TERM = frozenset({"quantity", "composite"})
# Above every character, so value < prefix + _TOP holds for all strings starting with prefix.
_TOP = "\U0010ffff"


@lru_cache(maxsize=8192)
def param_id(key: str) -> int:
    """The `param` column value of an index key: a stable 31-bit CRC-32. The keys come
    from the R4 definitions only; tests/test_search_sqlite.py checks they do not collide."""
    return zlib.crc32(key.encode()) & 0x7FFFFFFF


# Observation's combo-* parameters index exactly the union of two others (R4:
# combo-code is "Observation.code | Observation.component.code", combo-code-value-quantity
# pairs code and value on "Observation | Observation.component"), and were half of all
# quantity and composite rows: their rows are not stored, a search on one reads both
# (tests/test_storage_sqlite_footprint.py checks the definitions and the extracted rows).
UNIONS: dict[str, tuple[str, str]] = {
    f"Observation.combo-{name}": (f"Observation.{name}", f"Observation.component-{name}")
    for name in ("code", "code-value-concept", "code-value-quantity", "data-absent-reason",
                 "value-concept", "value-quantity")
}  # fmt: skip


@lru_cache(maxsize=8192)
def param_ids(key: str) -> tuple[int, ...]:
    """The `param` values whose rows make up index key `key` (suffixes such as ":text" or
    ":canonical" carry over): one, or two for a combo parameter (UNIONS)."""
    base, colon, suffix = key.partition(":")
    union = UNIONS.get(base)
    if union is None:
        return (param_id(key),)
    return tuple(param_id(part + colon + suffix) for part in union)


def param_sql(column: str, key: str) -> tuple[str, list[Any]]:
    """`column` (a param column) naming the rows of index key `key`."""
    ids = param_ids(key)
    if len(ids) == 1:
        return f"{column} = ?", list(ids)
    return f"{column} IN ({','.join('?' * len(ids))})", list(ids)


def _stored(key: str) -> bool:
    return key.partition(":")[0] not in UNIONS


def _clear_rows(conn: sqlite3.Connection, rid: int) -> None:
    for table in _TABLES:
        conn.execute(f"DELETE FROM {table} WHERE rid = ?", (rid,))


def clear_index(conn: sqlite3.Connection, rid: int) -> None:
    """Remove every index row of `rid` (the resource was deleted), its contained
    resources' included."""
    _clear_rows(conn, rid)
    sqlite_contained.clear(conn, rid, lambda contained: _clear_rows(conn, contained))


def replace_index(
    conn: sqlite3.Connection,
    rid: int,
    resource_type: str,
    resource: dict[str, Any],
    *,
    fresh: bool = False,
) -> None:
    """Replace the index rows of `rid` by those of `resource` (of `resource_type`).
    `fresh`: rid was just inserted, so it has no rows to remove."""
    if resource.get("resourceType") != resource_type:
        resource = {**resource, "resourceType": resource_type}
    if not fresh:
        clear_index(conn, rid)
    _insert_rows(conn, rid, _rows(resource))
    contained = sqlite_contained.resources_of(resource)
    if contained:  # each indexed under a negative rid of its own (sqlite_contained)
        sqlite_contained.store(
            conn, rid, contained,
            lambda crid, _, item: _insert_rows(conn, crid, _rows(item)),
        )  # fmt: skip


def _rows(resource: dict[str, Any]) -> IndexRows:
    rows = extract(resource)
    custom.add_rows(rows, resource)  # runtime SearchParameters (search.custom)
    resolve_local_references(rows, resource)
    if resource.get("resourceType") == "Observation":  # the combo-* rows (UNIONS)
        for found in (rows.tokens, rows.strings, rows.quantities, rows.quantity_ranges,
                      rows.composites):  # fmt: skip
            found.difference_update([row for row in found if not _stored(row[0])])
    return rows


# The id of an interned system URI (search_systems), as an SQL expression of one argument.
SYSTEM_ID = "(SELECT id FROM search_systems WHERE uri = ?)"


def _intern(conn: sqlite3.Connection, rows: IndexRows) -> None:
    """Give every system URI of `rows` an id (in the caller's transaction, so a rollback
    takes a new one away again; nothing is cached outside the file)."""
    uris = {system for _, system, _ in rows.tokens}
    uris.update(system for _, system, _, _ in rows.quantities)
    uris.update(values[0] for _, *values in rows.quantity_ranges)
    for _, *values in rows.composites:
        uris.update((values[0], values[2]))
    if uris:
        conn.executemany(
            "INSERT OR IGNORE INTO search_systems (uri) VALUES (?)", [(uri,) for uri in uris]
        )


def _insert_rows(conn: sqlite3.Connection, rid: int, rows: IndexRows) -> None:
    _intern(conn, rows)
    if rows.tokens:
        conn.executemany(
            "INSERT OR IGNORE INTO search_token (param, system, code, rid) "
            f"VALUES (?, {SYSTEM_ID}, ?, ?)",
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
        # plus a hull row per parameter with several values: the span of them all (see
        # _date_driver); with one value that row would be a copy of it
        hulls: dict[str, tuple[int, int]] = {}
        several: set[str] = set()
        for key, low, high in rows.dates:
            hull = hulls.get(key)
            if hull is not None:
                several.add(key)
            hulls[key] = (low, high) if hull is None else (min(hull[0], low), max(hull[1], high))
        conn.executemany(
            "INSERT OR IGNORE INTO search_date (param, low, high, rid) VALUES (?, ?, ?, ?)",
            [(param_id(p), low, high, rid) for p, low, high in rows.dates]
            + [(param_id(key + HULL), *hulls[key], rid) for key in several],
        )
    if rows.numbers:
        conn.executemany(
            "INSERT OR IGNORE INTO search_number (param, low, high, rid) VALUES (?, ?, ?, ?)",
            [(param_id(p), low, high, rid) for p, low, high in rows.numbers],
        )
    if rows.quantities:
        conn.executemany(
            "INSERT OR IGNORE INTO search_quantity (param, system, code, value, rid) "
            f"VALUES (?, {SYSTEM_ID}, ?, ?, ?)",
            [(param_id(p), system, code, value, rid) for p, system, code, value in rows.quantities],
        )
    if rows.quantity_ranges:
        conn.executemany(
            "INSERT OR IGNORE INTO search_quantity_range (param, system, code, low, high, rid) "
            f"VALUES (?, {SYSTEM_ID}, ?, ?, ?, ?)",
            [(param_id(p), *values, rid) for p, *values in rows.quantity_ranges],
        )
    if rows.composites:
        conn.executemany(
            "INSERT OR IGNORE INTO search_composite "
            "(param, system, code, v_system, v_code, v_low, v_high, rid) "
            f"VALUES (?, {SYSTEM_ID}, ?, {SYSTEM_ID}, ?, ?, ?, ?)",
            [(param_id(p), *values, rid) for p, *values in rows.composites],
        )


def _any_of(conditions: Sequence[str]) -> str:
    """`conditions` ORed as a balanced tree: a flat "a OR b OR ..." nests one level per
    term, and SQLite refuses expressions deeper than 1000 (a few hundred values of a
    parameter inside a chain reach that); balanced, 1,000 terms nest 10 deep."""
    if len(conditions) <= 4:
        return " OR ".join(conditions)
    middle = len(conditions) // 2
    return f"({_any_of(conditions[:middle])}) OR ({_any_of(conditions[middle:])})"


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
    if prefix == "ap":  # [q_low, q_high] is already widened by 10% of the gap to now
        return f"({high} >= ? AND {low} <= ?)", [q_low, q_high]
    raise ValueError(f"unknown date prefix {prefix!r}")


def _number_condition(term: NumberTerm, low: str, high: str) -> tuple[str, list[Any]]:
    """R4 search.html#number on a stored [low, high] (a decimal: low = high): eq/ne
    use the searched number's implicit range [t.low, t.high), gt/lt/ge/le the exact
    number, sa/eb lie beyond that range, ap overlaps the range within 10%."""
    value, q_low, q_high = float(term.value), float(term.low), float(term.high)
    prefix = term.prefix
    if prefix == "eq":
        return f"({low} >= ? AND {high} < ?)", [q_low, q_high]
    if prefix == "ne":
        return f"({low} < ? OR {high} >= ?)", [q_low, q_high]
    if prefix in ("gt", "ge", "lt", "le"):
        column = high if prefix in ("gt", "ge") else low
        operator = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[prefix]
        return f"{column} {operator} ?", [value]
    if prefix == "sa":
        return f"{low} >= ?", [q_high]
    if prefix == "eb":
        return f"{high} < ?", [q_low]
    if prefix == "ap":
        return f"({high} >= ? AND {low} <= ?)", [q_low, q_high]
    raise ValueError(f"unknown number prefix {prefix!r}")


def _uri_ancestors(uri: str) -> list[str]:
    """`uri` and its parents at "/" boundaries, for uri:above
    ("http://acme.org/fhir/ValueSet/1" down to "http://acme.org")."""
    parts = uri.split("/")
    found = ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    return [p for p in found if p and not p.endswith(":") and not p.endswith(":/")]


def _quantity_condition(
    key: str, term: QuantityTerm, low: str = "value", high: str = "value"
) -> tuple[str, list[Any]]:
    param, ids = param_sql("param", key + ":canonical" if term.canonical else key)
    conditions = [param]
    args: list[Any] = [*ids]
    if term.code is not None:
        conditions.append("code = ?")
        args.append(term.code)
    if term.system is not None:
        conditions.append(f"system = {SYSTEM_ID}")
        args.append(term.system)
    sql, values = _number_condition(term.number, low, high)
    return "(" + " AND ".join([*conditions, sql]) + ")", [*args, *values]


@lru_cache(maxsize=1024)
def _has_ranges(key: str) -> bool:
    """Whether the quantity parameter of index key "Type.code" can hold Range values (its
    expression names Range: the context-quantity parameters)."""
    resource_type, _, code = key.partition(".")
    if resource_type not in RESOURCE_TYPES:
        return False
    param = search_parameters(resource_type).get(code)
    return param is not None and "Range" in param.expression


def _quantity_clause_sql(clause: Clause, drives: bool) -> tuple[str, list[Any]]:
    """A quantity clause on a parameter with Range values: its Quantity rows or its
    Range rows (search_quantity_range, compared like number ranges)."""
    tables = (("search_quantity", "value", "value"), ("search_quantity_range", "low", "high"))
    if clause.missing is not None:
        param, ids = param_sql("x.param", clause.key)
        parts = [
            f"EXISTS (SELECT 1 FROM {table} x INDEXED BY {table}_rid "
            f"WHERE x.rid = r.rid AND {param})"
            for table, _, _ in tables
        ]
        either = f"({' OR '.join(parts)})"
        return ("NOT " if clause.missing else "") + either, ids * 2
    selects: list[tuple[str, str]] = []
    args: list[Any] = []
    for table, low, high in tables:
        conditions: list[str] = []
        for term in clause.terms:
            assert isinstance(term, QuantityTerm)
            sql, values = _quantity_condition(clause.key, term, low, high)
            conditions.append(sql)
            args.extend(values)
        selects.append((table, _any_of(conditions)))
    if drives:
        union = " UNION ALL ".join(f"SELECT rid FROM {t} WHERE {w}" for t, w in selects)
        return f"r.rid IN ({union})", args
    negate = "NOT " if clause.modifier == "not" else ""
    probes = " OR ".join(
        f"EXISTS (SELECT 1 FROM {t} x INDEXED BY {t}_rid WHERE x.rid = r.rid AND ({w}))"
        for t, w in selects
    )
    return f"{negate}({probes})", args


def _composite_condition(key: str, term: CompositeTerm) -> tuple[str, list[Any]]:
    second = term.second
    canonical = isinstance(second, QuantityTerm) and second.canonical
    param, ids = param_sql("param", key + ":canonical" if canonical else key)
    conditions = [param]
    args: list[Any] = [*ids]
    first = term.first
    # a reference first component is stored as (system, code) = (target type, id)
    first_columns = (
        (("code", first.target_id), ("system", first.target_type))
        if isinstance(first, ReferenceTerm)
        else (("code", first.code), ("system", first.system))
    )
    for column, value in first_columns:
        if value is not None:
            conditions.append(f"{column} = {SYSTEM_ID if column == 'system' else '?'}")
            args.append(value)
    if term.third is not None and isinstance(second, NumberTerm):
        # token$number$number: the numbers are v_low and v_high, each a plain decimal
        for number, column in ((second, "v_low"), (term.third, "v_high")):
            sql, values = _number_condition(number, column, column)
            conditions.append(sql)
            args.extend(values)
    elif isinstance(second, TokenTerm):
        for column, value in (("v_code", second.code), ("v_system", second.system)):
            if value is not None:
                conditions.append(f"{column} = {SYSTEM_ID if column == 'v_system' else '?'}")
                args.append(value)
    elif isinstance(second, QuantityTerm):
        for column, value in (("v_code", second.code), ("v_system", second.system)):
            if value is not None:
                conditions.append(f"{column} = {SYSTEM_ID if column == 'v_system' else '?'}")
                args.append(value)
        sql, values = _number_condition(second.number, "v_low", "v_high")
        conditions.append(sql)
        args.extend(values)
    elif isinstance(second, DateTerm):
        sql, values = _date_condition(second.prefix, "v_low", "v_high", second.low, second.high)
        conditions.append(sql)
        args.extend(values)
    else:
        conditions.append("(v_code >= ? AND v_code < ?)")
        args.extend([second.normalized, second.normalized + _TOP])
    return "(" + " AND ".join(conditions) + ")", args


def _term_condition(clause: Clause, term: object) -> tuple[str, list[Any]]:
    if isinstance(term, TokenTerm):
        if term.system is None:
            return "code = ?", [term.code]
        if term.code is None:
            return f"system = {SYSTEM_ID}", [term.system]
        return f"(code = ? AND system = {SYSTEM_ID})", [term.code, term.system]
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
    if isinstance(term, NumberTerm):
        return _number_condition(term, "low", "high")
    if isinstance(term, QuantityTerm):
        return _quantity_condition(clause.key, term)
    if isinstance(term, CompositeTerm):
        return _composite_condition(clause.key, term)
    if isinstance(term, UriTerm):
        if clause.modifier == "below":
            return "(code >= ? AND code < ?)", [term.value, term.value + _TOP]
        if clause.modifier == "above":
            ancestors = _uri_ancestors(term.value)
            return f"code IN ({','.join('?' * len(ancestors))})", ancestors
        return "code = ?", [term.value]
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
    return "(" + _any_of(conditions) + ")", args


def _date_bounds(term: DateTerm) -> tuple[int | None, int | None]:
    """(least `high`, greatest `low`) a stored date range must have to match `term`,
    where the prefix implies them (search.html#prefix; see _date_condition)."""
    q_low, q_high, prefix = term.low, term.high, term.prefix
    least_high = {"eq": q_low, "gt": q_high + 1, "ge": q_low, "ap": q_low}.get(prefix)
    greatest_low = {"eq": q_high, "lt": q_low - 1, "le": q_high, "eb": q_low - 1,
                    "ap": q_high}.get(prefix)  # fmt: skip
    return least_high, greatest_low


def _date_driver(clause: Clause, others: Sequence[Clause]) -> tuple[str, list[Any]] | None:
    """The driving condition of a date clause, on the hull rows of its parameter and as
    one index range per width class.

    "date=ge2020-03-01&date=lt2020-03-02" asks for resources with a value whose high is
    >= X and a value whose low is < Y: neither bound alone is selective on
    (param, low, high), and the two values may differ. The hull row of a resource spans
    all its values, so it has high >= X and low < Y whenever the resource matches: the
    bounds of every single-value date clause on the parameter apply to it together (a
    resource with a single value has no hull row: its value row is read instead, as the
    parameter's own rows are read with the hull rows). In one width class w, high >= X
    implies low > X - w, so each class is a short range of search_date_span
    (param, class, low). The clauses themselves still filter exactly.
    None when no clause bounds `high` from below (the primary key range on low serves).
    """
    least_high: int | None = None
    greatest_low: int | None = None
    for other in (clause, *others):
        if other.key != clause.key or other.modifier is not None or len(other.terms) != 1:
            continue
        term = other.terms[0]
        if not isinstance(term, DateTerm):
            continue
        high, low = _date_bounds(term)
        if high is not None:
            least_high = high if least_high is None else max(least_high, high)
        if low is not None:
            greatest_low = low if greatest_low is None else min(greatest_low, low)
    if least_high is None:
        return None
    parts: list[str] = []
    args: list[Any] = []
    for span in _SPAN_CLASSES:
        widest = (16**span + 1) << 20
        parts.append(
            f"SELECT rid FROM search_date WHERE param IN (?, ?) AND {_SPAN} = ? AND low >= ? "
            "AND low <= ? AND high >= ?"
        )
        args += [param_id(clause.key + HULL), param_id(clause.key), span,
                 max(least_high - widest, DATE_MIN),
                 DATE_MAX if greatest_low is None else greatest_low, least_high]  # fmt: skip
    return f"r.rid IN ({' UNION ALL '.join(parts)})", args


def _clause_sql(clause: Clause, drives: bool) -> tuple[str, list[Any]]:
    if clause.code in FIELD_OF_PARAMETER:  # _text, _content: the FTS5 table
        return sqlite_fulltext.condition(sqlite_fulltext.clause_query(clause), drives)
    if clause.code in ("_id", "_lastUpdated"):
        return _column_clause(clause)
    if clause.param_type == "quantity" and _has_ranges(clause.key):
        return _quantity_clause_sql(clause, drives)
    table = _TABLE_OF[clause.param_type]
    key = clause.key
    if clause.missing is not None:
        param, ids = param_sql("x.param", key)
        exists = (
            f"EXISTS (SELECT 1 FROM {table} x INDEXED BY {table}_rid "
            f"WHERE x.rid = r.rid AND {param})"
        )
        return ("NOT " if clause.missing else "") + exists, ids
    if clause.modifier == "text":  # token :text searches the codes' text and display
        table, key = "search_string", key + ":text"
    elif clause.modifier == "of-type":
        key += ":of-type"
    elif clause.modifier == "identifier":  # reference :identifier: Reference.identifier
        table, key = "search_token", key + IDENTIFIER
    conditions: list[str] = []
    own_param = clause.param_type in _PARAM_PER_TERM
    param, ids = param_sql("param", key)
    args: list[Any] = [] if own_param else ids
    for term in clause.terms:
        sql, values = _term_condition(clause, term)
        conditions.append(sql)
        args.extend(values)
    where = _any_of(conditions)
    param = "" if own_param else f"{param} AND "
    if drives:
        return f"r.rid IN (SELECT rid FROM {table} WHERE {param}({where}))", args
    negate = "NOT " if clause.modifier == "not" else ""
    return (
        f"{negate}EXISTS (SELECT 1 FROM {table} x INDEXED BY {table}_rid "
        f"WHERE x.rid = r.rid AND {param}({where}))",
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
    if clause.param_type in ("composite", "uri"):
        return 1
    if clause.param_type == "quantity":
        return 2 if all(getattr(t, "code", None) for t in clause.terms) else 5
    if clause.param_type in ("date", "number"):
        return 5
    return 6


# The driving clause search_page measured for the query it runs (_measured_driver); a
# clause of that very query (by identity), so the queries of its chains are unaffected.
_MEASURED: contextvars.ContextVar[Clause | None] = contextvars.ContextVar(
    "sqlite_index_measured_driver", default=None
)
MAX_MEASURED = 4  # candidate driving clauses counted per search


def _positives(query: SearchQuery) -> list[Clause]:
    return [
        c
        for c in query.clauses
        if c.missing is None and c.modifier != "not" and c.code != "_lastUpdated"
    ]


def _driver(query: SearchQuery) -> Clause | None:
    """The clause whose index range drives the search, if any: the one search_page
    measured as the most selective, else the best by the static rank of _selectivity."""
    if any(c.code == "_id" and c.missing is None for c in query.clauses):
        return None  # the (tenant, type, id) key is the best path
    positives = _positives(query)
    measured = _MEASURED.get()
    if measured is not None and any(c is measured for c in positives):
        return measured
    return min(positives, key=_selectivity) if positives else None


def _measured_driver(conn: sqlite3.Connection, query: SearchQuery) -> Clause | None:
    """Among the positive clauses with an index range (up to MAX_MEASURED, best static
    rank first), the one with the fewest rows, counted up to PROBE_LIMIT each within the
    step budget; None when there is nothing to choose between. The static rank cannot
    tell `code=4548-4` (46,000 rows at 1M resources) from `value-quantity=gt8||%` (900)."""
    if any(c.code == "_id" and c.missing is None for c in query.clauses):
        return None
    candidates: list[tuple[Clause, str, list[Any]]] = []
    for clause in sorted(_positives(query), key=_selectivity)[:MAX_MEASURED]:
        sql, args = _clause_sql(clause, True)
        inner = _rid_list(sql)
        if inner is not None:
            candidates.append((clause, inner, args))
    if len(candidates) < 2:
        return None
    best: tuple[int, Clause] | None = None
    for clause, inner, args in candidates:
        found = _within_budget(
            conn, f"SELECT count(*) FROM ({inner} LIMIT ?)", [*args, PROBE_LIMIT], PROBE_LIMIT
        )
        if best is None or found < best[0]:
            best = (found, clause)
    return None if best is None else best[1]


# The column a sort reads per type, ascending / descending (search.html#sort: with
# several values, ascending uses the lowest, descending the highest).
_SORT_COLUMN = {
    "token": ("code", "code"),
    "uri": ("code", "code"),
    "string": ("value", "value"),
    "reference": ("target_id", "target_id"),
    "date": ("low", "high"),
    "number": ("low", "high"),
    "quantity": ("value", "value"),
}


def _score_sql(query: SearchQuery) -> tuple[str, list[Any]]:
    """_sort=_score: the BM25 of the first _text/_content clause (lower is more relevant,
    so ascending is best first). Scores depend on the whole index, so paging by score
    while others write may skip or repeat a resource."""
    clause = next(c for c in query.clauses if c.code in FIELD_OF_PARAMETER)
    return sqlite_fulltext.score_sql(sqlite_fulltext.clause_query(clause))


def _sort_sql(sort: SortKey) -> tuple[str, list[Any]]:
    if sort.code == "_id":
        return "r.id", []
    if sort.code == "_lastUpdated":
        return "r.last_updated", []
    table = _TABLE_OF[sort.param_type]
    aggregate = "MAX" if sort.descending else "MIN"
    column = _SORT_COLUMN[sort.param_type][1 if sort.descending else 0]
    def value(key: str) -> tuple[str, list[Any]]:
        param, ids = param_sql("s.param", key)
        return (
            f"(SELECT {aggregate}(s.{column}) FROM {table} s INDEXED BY {table}_rid "
            f"WHERE s.rid = r.rid AND {param})"
        ), ids

    if sort.param_type == "quantity":
        # the canonical UCUM value where the unit converts (100 mg/dL sorts with 1 g/L,
        # search.units), else the value as stored
        canonical, canonical_ids = value(sort.key + ":canonical")
        plain, plain_ids = value(sort.key)
        return f"coalesce({canonical}, {plain})", [*canonical_ids, *plain_ids]
    return value(sort.key)


def _seek(sorts: Sequence[SortKey], position: cursors.Position) -> tuple[str, list[Any]]:
    """The rows after `position` in the order of `_order`: lexicographic over the sort
    keys (missing values last in both directions), then rid."""
    values, rid = position
    alternatives: list[str] = []
    args: list[Any] = []
    equal: list[str] = []
    equal_args: list[Any] = []
    for index, (sort, value) in enumerate(zip(sorts, values, strict=True)):
        column = f"k{index}"
        if value is not None:  # after: a later value, or none at all (missing sorts last)
            operator = "<" if sort.descending else ">"
            alternatives.append(
                "(" + " AND ".join([*equal, f"({column} IS NULL OR {column} {operator} ?)"]) + ")"
            )
            args.extend([*equal_args, value])
            equal.append(f"{column} = ?")
            equal_args.append(value)
        else:
            equal.append(f"{column} IS NULL")
    alternatives.append("(" + " AND ".join([*equal, "rid > ?"]) + ")")
    args.extend([*equal_args, rid])
    return " OR ".join(alternatives), args


def _order(sorts: Sequence[SortKey]) -> str:
    keys = [
        f"k{i} IS NULL, k{i} {'DESC' if sort.descending else 'ASC'}" for i, sort in enumerate(sorts)
    ]
    return ", ".join([*keys, "rid"])


# How many matches a candidate driving condition is counted up to (links_drive): enough
# to tell a selective condition from a common one, cheap for either.
PROBE_LIMIT = 1000


def _rid_list(sql: str) -> str | None:
    """The SELECT inside a condition of the form `r.rid IN (SELECT ...)`, else None."""
    head = "r.rid IN ("
    if not sql.startswith(head) or not sql.endswith(")"):
        return None
    depth = 0
    for index, char in enumerate(sql[len(head) - 1 :], start=len(head) - 1):
        depth += char == "("
        depth -= char == ")"
        if depth == 0:
            return sql[len(head) : -1] if index == len(sql) - 1 else None
    return None


def _bounded_count(
    conn: sqlite3.Connection, tenant: str, rtype: str, sql: str, args: list[Any]
) -> int:
    """Up to PROBE_LIMIT matches of one condition. A rid list is counted by itself, which
    stops at the limit (joined to resources, SQLite would first build the whole list);
    its rows may include other tenants' or deleted ones, which is fine for an estimate."""
    inner = _rid_list(sql)
    if inner is not None:
        count_sql, count_args = f"SELECT count(*) FROM ({inner} LIMIT ?)", [*args, PROBE_LIMIT]
    else:
        count_sql = (
            "SELECT count(*) FROM (SELECT 1 FROM resources r WHERE r.tenant = ? "
            f"AND r.type = ? AND {sql} LIMIT ?)"
        )
        count_args = [tenant, rtype, *args, PROBE_LIMIT]
    return _within_budget(conn, count_sql, count_args, PROBE_LIMIT)


# SQLite virtual machine steps (in thousands) a bounded count may take: a chain whose
# lists are large cannot be counted cheaply even up to PROBE_LIMIT (its inner lists are
# built in full first), and that alone tells it is common.
COUNT_BUDGET = 50


def _within_budget(
    conn: sqlite3.Connection, sql: str, args: list[Any], over_budget: int
) -> int:
    """The single integer `sql` selects, or `over_budget` when computing it takes more
    than COUNT_BUDGET thousand SQLite steps (the statement is interrupted)."""
    steps = 0

    def spend() -> int:
        nonlocal steps
        steps += 1
        return int(steps > COUNT_BUDGET)

    conn.set_progress_handler(spend, 1000)
    try:
        (found,) = _execute(conn, sql, args).fetchone()
    except sqlite3.OperationalError as exc:
        if "interrupted" not in str(exc):
            raise
        return over_budget
    finally:
        conn.set_progress_handler(None, 0)
    return int(found)


def _far_side_count(
    conn: sqlite3.Connection, tenant: str, link: ChainClause | HasClause
) -> int:
    """Up to PROBE_LIMIT resources on the far side of a chain (the last hop's targets, or
    the first's when it nests) or `_has` (the referrers): a cheap hint of the size of its
    list, which is built in full before it can be counted."""
    inner = link.referrers if isinstance(link, HasClause) else link.targets[0][1]
    where, args = _where(tenant, inner)
    sql = f"SELECT count(*) FROM (SELECT 1 FROM resources r WHERE {where} LIMIT ?)"
    return _within_budget(conn, sql, [*args, PROBE_LIMIT], PROBE_LIMIT)


def links_drive(conn: sqlite3.Connection, tenant: str, query: SearchQuery) -> bool:
    """Whether the chains and `_has` of `query` should drive it rather than its ordinary
    driving parameter (_driver). The static rank of _selectivity cannot tell: a chain
    may select one resource or most of them. So both are counted, up to PROBE_LIMIT rows
    each, and the smaller drives (code=718-7&encounter.service-provider.identifier=X at
    1M resources: the chain selects a few rows, the code hundreds of thousands)."""
    links = [link for link in query.links if isinstance(link, ChainClause | HasClause)]
    if not links or query.resource_type is None or sqlite_graph.leads(query):
        return False
    driver = _driver(query)
    if driver is None:
        # nothing else drives, or _id does (the (tenant, type, id) key is best)
        if any(c.code == "_id" and c.missing is None for c in query.clauses):
            return False
        if query.total == "accurate":
            return True  # the count reads the whole list anyway: build it once
        # A page alone (or with an estimate) stops early when the type's resources drive
        # in rid order and each is checked (sqlite_graph._probe_sql), unless a link is
        # selective: its far side matching fewer than PROBE_LIMIT resources.
        return any(_far_side_count(conn, tenant, link) < PROBE_LIMIT for link in links)
    driver_sql, driver_args = _clause_sql(driver, True)
    ordinary = _bounded_count(conn, tenant, query.resource_type, driver_sql, driver_args)
    for link in links:
        sql, args = sqlite_graph.link_sql(tenant, link, _where, param_id)
        if _bounded_count(conn, tenant, query.resource_type, sql, args) < ordinary:
            return True
    return False


def _always(link: object) -> bool:
    return True


def _where(
    tenant: str,
    query: SearchQuery,
    hulls: frozenset[str] = frozenset(),
    hint: bool = True,
    lead_links: bool = False,
    *,
    drive: bool = True,
    walk: bool = False,
    contained: frozenset[str] = frozenset(),
) -> tuple[str, list[Any]]:
    """The WHERE clause over `resources r` (or the contained table, which has the same
    columns) for `query`; `hulls` holds the date keys whose hull rows exist (search_page
    checks; files indexed before them lack them).

    With a driving clause and `hint`, "+" keeps SQLite from walking resources_live
    instead of the driver's rids (a page reads them in rid order and stops early);
    a count goes without it and checks each rid in resources_live. `drive=False` makes
    every condition a per-row probe (the table itself drives); `walk=True` only the
    chains and `_has` of a search with no other driver (links_drive found them common).
    `contained`: the types with contained resources in the tenant, into which chains
    also look."""
    # a compartment drives by itself (sqlite_graph.leads), so do selective chains and
    # _has when search_page measured them so (links_drive)
    driver = (
        None if not drive or lead_links or sqlite_graph.leads(query) else _driver(query)
    )
    # Chains and _has lead when nothing else drives (no driving clause, compartment or
    # _id), unless the caller walks the type's resources with per-row checks instead
    if drive and not walk and driver is None and not sqlite_graph.leads(query):
        lead_links = lead_links or not any(
            c.code == "_id" and c.missing is None for c in query.clauses
        )
    plus = "+" if driver is not None and hint else ""
    conditions = [f"{plus}r.tenant = ?", "r.deleted = 0"]
    args: list[Any] = [tenant]
    if query.resource_type is not None:
        conditions.append(f"{plus}r.type = ?")
        args.append(query.resource_type)
    for clause in query.clauses:
        found = None
        if clause is driver and clause.key in hulls:
            found = _date_driver(clause, query.clauses)
        sql, values = found or _clause_sql(clause, clause is driver)
        if found is not None:  # the hull rows narrow; the clause itself decides
            conditions.append(sql)
            args.extend(values)
            sql, values = _clause_sql(clause, False)
        conditions.append(sql)
        args.extend(values)
    if query.links or query.types:  # chains, _has, compartment, _type (search.chain)
        # a compartment goes right after the tenant (see sqlite_graph.links_sql)
        where = partial(_where, contained=contained)
        # a chain or _has that does not drive is checked per row (sqlite_graph._probe_sql):
        # the rows it is checked on are the driver's (or the page's), never more
        lead, rest = sqlite_graph.links_sql(
            tenant, query, where, param_id, lead_links and drive, contained, _always
        )
        lead_args = [value for _, values in lead for value in values]
        conditions[1:1] = [sql for sql, _ in lead]
        args[1:1] = lead_args
        conditions += [sql for sql, _ in rest]
        args += [value for _, values in rest for value in values]
    return " AND ".join(conditions), args


def _hull_keys(conn: sqlite3.Connection, query: SearchQuery) -> frozenset[str]:
    """The date keys of `query` whose hull rows are in the index: all of them, unless the
    file was indexed before hull rows existed (search_index_state)."""
    state = conn.execute(
        "SELECT value FROM search_index_state WHERE name = 'date_hulls'"
    ).fetchone()
    if state is None or state[0] != "complete":
        return frozenset()
    return frozenset(
        c.key for c in query.clauses if c.param_type == "date" and c.code != "_lastUpdated"
    )


# SQLite's messages for a statement beyond its compile-time limits (nesting of the
# parser, expression depth, bound variables, compound SELECTs): the search is too big,
# not the store broken. search.query bounds sizes; chains of chains can still nest deep.
_TOO_COMPLEX = ("parser stack overflow", "too large", "too many")


def _execute(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> sqlite3.Cursor:
    try:
        return conn.execute(sql, args)
    except sqlite3.OperationalError as exc:
        if not any(text in str(exc) for text in _TOO_COMPLEX):
            raise
        raise FHIRError.simple(
            400, "too-costly",
            "The search is too complex to run (nested chains and _has, or too many values); "
            "simplify it",
        ) from None


@dataclass(frozen=True)
class IndexPage:
    """One page of matches: their rids in order, the number of matches in all (None for
    _total=none), and the cursor of the page after it (None on the last page)."""

    rids: list[int]
    total: int | None
    next_cursor: str | None = None


def contained_types(conn: sqlite3.Connection, tenant: str) -> frozenset[str]:
    """The types of which `tenant` has contained resources: one index seek per type
    (a skip-scan of contained_live), nothing when there are none."""
    rows = conn.execute(
        "WITH RECURSIVE t(type) AS (SELECT min(type) FROM contained WHERE tenant = ?1 "
        "UNION ALL SELECT (SELECT min(type) FROM contained WHERE tenant = ?1 AND type > t.type) "
        "FROM t WHERE t.type IS NOT NULL) SELECT type FROM t WHERE type IS NOT NULL",
        (tenant,),
    ).fetchall()
    return frozenset(row[0] for row in rows)


@dataclass(frozen=True)
class _Source:
    """One table a search reads (resources, or contained for _contained=true|both), its
    WHERE, and the column that names a match (the container's rid for
    _containedType=container)."""

    table: str
    where: str
    args: list[Any]
    rid: str = "r.rid"


def _sources(
    conn: sqlite3.Connection,
    tenant: str,
    query: SearchQuery,
    hulls: frozenset[str],
    lead_links: bool,
    hint: bool,
) -> list[_Source]:
    mode = query.result.contained
    types = contained_types(conn, tenant) if query.links or mode != "false" else frozenset()
    # links_drive found the links common when they could have led: walk instead
    where, args = _where(
        tenant, query, hulls, hint, lead_links, walk=not lead_links, contained=types
    )
    sources: list[_Source] = []
    if mode != "true":
        sources.append(_Source("resources", where, args))
    if mode != "false" and (query.resource_type is None or query.resource_type in types):
        grouped = query.result.contained_type == "container"
        sources.append(_Source(
            sqlite_contained.TABLE, where, args, "r.container" if grouped else "r.rid"
        ))  # fmt: skip
    return sources


def _grouped(query: SearchQuery) -> bool:
    """Whether matches inside resources are returned as their containers (each once)."""
    return query.result.contained != "false" and query.result.contained_type == "container"


def _count(conn: sqlite3.Connection, query: SearchQuery, sources: list[_Source]) -> int:
    if not sources:
        return 0
    if _grouped(query) and len(sources) > 1:  # a container may match in both ways
        union = " UNION ".join(
            f"SELECT {s.rid} FROM {s.table} r WHERE {s.where}" for s in sources
        )
        args = [value for s in sources for value in s.args]
        (found,) = _execute(conn, f"SELECT COUNT(*) FROM ({union})", args).fetchone()
        return int(found)
    total = 0
    for source in sources:
        distinct = "DISTINCT " if source.rid != "r.rid" else ""
        (found,) = _execute(
            conn,
            f"SELECT COUNT({distinct}{source.rid}) FROM {source.table} r WHERE {source.where}",
            source.args,
        ).fetchone()
        total += int(found)
    return total


# _total=estimate: up to this many matches the count is exact (and cheap); beyond it the
# matches are estimated from the driving rid list (see _estimate).
ESTIMATE_EXACT = 1000


def _driving_list(
    tenant: str, query: SearchQuery, hulls: frozenset[str], lead_links: bool
) -> tuple[str, list[Any]] | None:
    """The SELECT of rids that drives `query` (its driving clause's index range), when it
    has one. None when a chain, `_has` or compartment leads: their lists are built in
    full whatever is read of them, so counting them is no cheaper than the search."""
    if lead_links or sqlite_graph.leads(query):
        return None
    driver = _driver(query)
    if driver is None:
        if query.resource_type is None or any(
            c.code == "_id" and c.missing is None for c in query.clauses
        ):
            return None
        # every live resource of the type, in rid order (resources_live)
        return (
            "SELECT rid FROM resources WHERE tenant = ? AND type = ? AND deleted = 0",
            [tenant, query.resource_type],
        )
    found = _date_driver(driver, query.clauses) if driver.key in hulls else None
    sql, args = found or _clause_sql(driver, True)
    inner = _rid_list(sql)
    return None if inner is None else (inner, args)


def _estimate(
    conn: sqlite3.Connection,
    tenant: str,
    query: SearchQuery,
    hulls: frozenset[str],
    lead_links: bool,
    sources: list[_Source],
) -> int:
    """_total=estimate (search.html#total): the exact count when it is cheap, else an
    estimate from the driving rid list.

    Exact: when the search has no driving index range (a compartment, a leading chain or
    _has, `_id`), searches contained resources or several types, or its driving list has
    at most ESTIMATE_EXACT rows. A search with no driving parameter at all (only chains,
    `_has`, :missing or :not) has the type's own resources as its list. Otherwise: the
    rows of the driving list (counted in its own index, without visiting any resource)
    times the share of its first ESTIMATE_EXACT rows that meet every condition.
    `code=718-7&date=ge2020` at 1M resources reads the code's index range and 1,000
    resources, instead of every match. The estimate assumes the first rows of the list are like the others."""
    found = None
    if query.resource_type is not None and query.result.contained == "false":
        found = _driving_list(tenant, query, hulls, lead_links)
    if found is None:
        return _count(conn, query, sources)
    inner, args = found
    (head,) = _execute(
        conn, f"SELECT count(*) FROM ({inner} LIMIT ?)", [*args, ESTIMATE_EXACT + 1]
    ).fetchone()
    if head <= ESTIMATE_EXACT:
        return _count(conn, query, sources)
    (rows,) = _execute(conn, f"SELECT count(*) FROM ({inner})", args).fetchone()
    types = contained_types(conn, tenant) if query.links else frozenset()
    where, where_args = _where(tenant, query, hulls, hint=False, drive=False, contained=types)
    (matched,) = _execute(
        conn,
        f"SELECT count(*) FROM resources r WHERE r.rid IN ({inner} LIMIT ?) AND {where}",
        [*args, ESTIMATE_EXACT, *where_args],
    ).fetchone()
    return round(rows * matched / ESTIMATE_EXACT)


# A search sorted by one date parameter walks that parameter's index in sort order when
# its driving list has more rows than this (or it has none): the page then costs about
# page size / share of matching resources, instead of a sort of every match.
WALK_ABOVE = 5000


def _walks(conn: sqlite3.Connection, tenant: str, query: SearchQuery, hulls: frozenset[str],
           lead_links: bool) -> bool:  # fmt: skip
    """Whether the page of `query` should come from _sorted_walk."""
    if (
        len(query.sorts) != 1
        or query.sorts[0].param_type != "date"
        or query.sorts[0].code in ("_id", "_lastUpdated")
        or query.resource_type is None
        or query.result.contained != "false"
        or query.offset
        or lead_links
        or sqlite_graph.leads(query)
        or any(c.code == "_id" and c.missing is None for c in query.clauses)
    ):
        return False
    found = _driving_list(tenant, query, hulls, lead_links)
    if found is None:
        return False
    inner, args = found
    (head,) = _execute(
        conn, f"SELECT count(*) FROM ({inner} LIMIT ?)", [*args, WALK_ABOVE + 1]
    ).fetchone()
    return bool(head > WALK_ABOVE)


def _sorted_walk(
    conn: sqlite3.Connection, tenant: str, query: SearchQuery, hulls: frozenset[str]
) -> list[Any]:
    """The page rows (rid, sort value) of a search sorted by one date parameter, read in
    sort order from the date index (descending: search_date_high by high; ascending: the
    primary key by low), each row checked against every condition, then the matches
    without a value (rid order): one more than the page when there are more. A
    resource's row counts only at its own sort value (its highest high descending, its
    lowest low ascending), so none comes twice."""
    sort = query.sorts[0]
    types = contained_types(conn, tenant) if query.links else frozenset()
    where, args = _where(tenant, query, hulls, hint=False, drive=False, contained=types)
    limit = query.count + 1
    position = query.position
    rows: list[Any] = []
    if position is None or position[0][0] is not None:
        if sort.descending:
            column, index, order = "high", "INDEXED BY search_date_high", "d.high DESC, d.rid"
            first = "(s.high > d.high OR (s.high = d.high AND s.low < d.low))"
            after = "(d.high < ? OR (d.high = ? AND d.rid > ?))"
        else:
            # the primary key (param, low, high, rid): NOT INDEXED keeps it
            column, index, order = "low", "NOT INDEXED", "d.low, d.rid"
            first = "(s.low < d.low OR (s.low = d.low AND s.high < d.high))"
            after = "(d.low > ? OR (d.low = ? AND d.rid > ?))"
        seek_args: list[Any] = []
        seek = ""
        if position is not None:
            seek = f" AND {after}"
            seek_args = [position[0][0], position[0][0], position[1]]
        key = param_id(sort.key)
        sql = (
            f"SELECT d.rid, d.{column} FROM search_date d {index} "
            "CROSS JOIN resources r ON r.rid = d.rid "
            f"WHERE d.param = ?{seek} AND NOT EXISTS (SELECT 1 FROM search_date s "
            "INDEXED BY search_date_rid "
            f"WHERE s.rid = d.rid AND s.param = d.param AND {first}) AND {where} "
            f"ORDER BY {order} LIMIT ?"
        )
        rows = _execute(conn, sql, [key, *seek_args, *args, limit]).fetchall()
    if len(rows) < limit:
        after_rid = position[1] if position is not None and position[0][0] is None else None
        sql = (
            f"SELECT r.rid, NULL FROM resources r WHERE {where} AND NOT EXISTS (SELECT 1 "
            "FROM search_date s INDEXED BY search_date_rid WHERE s.rid = r.rid AND s.param = ?)"
            + (" AND r.rid > ?" if after_rid is not None else "")
            + " ORDER BY r.rid LIMIT ?"
        )
        extra = [*args, param_id(sort.key)] + ([after_rid] if after_rid is not None else [])
        rows += _execute(conn, sql, [*extra, limit - len(rows)]).fetchall()
    return rows


def search_page(conn: sqlite3.Connection, tenant: str, query: SearchQuery) -> IndexPage:
    """See _search_page; the driving clause is measured first (_measured_driver)."""
    token = _MEASURED.set(_measured_driver(conn, query))
    try:
        return _search_page(conn, tenant, query)
    finally:
        _MEASURED.reset(token)


def _search_page(conn: sqlite3.Connection, tenant: str, query: SearchQuery) -> IndexPage:
    """The page of current resources of `tenant` matching `query`, in its sort order
    (by rid when unsorted, and by rid among equal sort values): the rows after
    `query.position` when it has one (keyset paging), else from `query.offset`.

    With `_contained=true|both` (search.result) contained resources match too: their
    rids are negative (sqlite_contained); with `_containedType=container` each match
    inside a resource gives that resource's rid instead, once, sorted by the lowest
    (ascending) or highest (descending) sort value of its matching contained resources."""
    hulls = _hull_keys(conn, query)
    lead_links = links_drive(conn, tenant, query)
    sources = _sources(conn, tenant, query, hulls, lead_links, hint=True)
    total: int | None = None
    if query.total != "none":
        count_sources = _sources(conn, tenant, query, hulls, lead_links, hint=False)
        if query.total == "estimate":
            total = _estimate(conn, tenant, query, hulls, lead_links, count_sources)
        else:
            total = _count(conn, query, count_sources)
    # an estimate of 0 may be wrong, so only an exact one saves the page query
    if query.count == 0 or (total == 0 and query.total == "accurate") or not sources:
        return IndexPage([], total)

    if _walks(conn, tenant, query, hulls, lead_links):
        return _paged(query, _sorted_walk(conn, tenant, query, hulls), total)
    sorts = query.sorts
    columns: list[str] = []
    select_args: list[Any] = []
    for index, sort in enumerate(sorts):
        sql, values = _score_sql(query) if sort.code == "_score" else _sort_sql(sort)
        columns.append(f"{sql} AS k{index}")
        select_args.extend(values)
    parts: list[str] = []
    params: list[Any] = []
    for source in sources:
        parts.append(
            f"SELECT {', '.join([f'{source.rid} AS rid', *columns])} "
            f"FROM {source.table} r WHERE {source.where}"
        )
        params += [*select_args, *source.args]
    seeks: list[str] = []
    if len(parts) == 1 and not _grouped(query):
        inner = parts[0]
        if query.position is not None and not sorts:
            # unsorted: the rid range itself, an index seek
            inner += " AND r.rid > ?"
            params.append(query.position[1])
    else:
        inner = " UNION ALL ".join(parts)
        if _grouped(query):
            keys = [
                f"{'MAX' if sort.descending else 'MIN'}(k{index}) AS k{index}"
                for index, sort in enumerate(sorts)
            ]
            inner = f"SELECT {', '.join(['rid', *keys])} FROM ({inner}) GROUP BY rid"
        if query.position is not None and not sorts:
            seeks.append("rid > ?")
            params.append(query.position[1])
    if query.position is not None and sorts:
        seek_sql, seek_args = _seek(sorts, query.position)
        seeks.append(f"({seek_sql})")
        params.extend(seek_args)
    seek = f" WHERE {' AND '.join(seeks)}" if seeks else ""
    offset = 0 if query.position is not None else query.offset
    sql = f"SELECT * FROM ({inner}){seek} ORDER BY {_order(sorts)} LIMIT ? OFFSET ?"
    # one row more than the page tells whether there is a next page
    rows = _execute(conn, sql, [*params, query.count + 1, offset]).fetchall()
    return _paged(query, rows, total)


def _paged(query: SearchQuery, rows: list[Any], total: int | None) -> IndexPage:
    """The page of `rows` (rid, sort values...), at most one more than the page size."""
    next_cursor = None
    if len(rows) > query.count:
        rows = rows[: query.count]
        last = rows[-1]
        next_cursor = cursors.encode(tuple(last[1:]), last[0], query.sort_signature)
    return IndexPage([row[0] for row in rows], total, next_cursor)


def search_rids(
    conn: sqlite3.Connection, tenant: str, query: SearchQuery
) -> tuple[list[int], int | None]:
    """`search_page` without the cursor: the page's rids and the total."""
    page = search_page(conn, tenant, query)
    return page.rids, page.total
