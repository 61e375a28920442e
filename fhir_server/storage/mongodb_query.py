"""Conditions of the MongoDB search: the pieces of a `SearchQuery` as MongoDB query
documents on the index entries a resource document keeps (mongodb_search.py describes
them), and the sort keys, order and keyset seek of a sorted page. No I/O here: every
function returns a document, so tests/test_mongodb_queries.py can pin them.

Each condition mirrors its counterpart in fhir_server/storage/sqlite_index.py (R4
search.html, per type and prefix), on the same stored values.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from conformance.definitions import RESOURCE_TYPES, search_parameters
from fhir_server.errors import FHIRError, Issue
from search import cursor as cursors
from search.extract import IDENTIFIER
from search.query import (
    Clause,
    CompositeTerm,
    DateTerm,
    NumberTerm,
    QuantityTerm,
    ReferenceTerm,
    SortKey,
    StringTerm,
    TokenTerm,
    UriTerm,
)
from search.values import MAX_STRING, iso_utc

INDEX_FIELD = "idx"
# The longest normalised text a stored string can have (MAX_STRING characters, each of
# which NFKD expands to at most 18): a longer search value cannot match anything.
MAX_NORMALIZED = MAX_STRING * 18
# Above every character: value < prefix + TOP holds for every value starting with prefix
# (UTF-8 byte order, which MongoDB compares strings by, is code point order).
TOP = "\U0010ffff"
# Never true for a stored document: an empty id list.
NOTHING: dict[str, Any] = {"id": {"$in": []}}

ARRAY_OF = {
    "token": "tk",
    "uri": "tk",
    "string": "st",
    "reference": "rf",
    "date": "dt",
    "number": "nm",
    "quantity": "qt",
    "composite": "cp",
}
# The entry field a sort reads, ascending / descending (as sqlite_index._SORT_COLUMN).
SORT_FIELD = {
    "token": ("c", "c"),
    "uri": ("c", "c"),
    "string": ("n", "n"),
    "reference": ("i", "i"),
    "date": ("lo", "hi"),
    "number": ("lo", "hi"),
    "quantity": ("v", "v"),
}
# Types whose terms carry their own parameter (a canonical quantity has another key).
_PARAM_PER_TERM = frozenset({"quantity", "composite"})


def param_code(key: str) -> str:
    """The `p` of an index key: "Observation.code" -> "code"; "_tag" stays."""
    return key.partition(".")[2] if "." in key else key


def in_values(values: Sequence[Any]) -> Any:
    return values[0] if len(values) == 1 else {"$in": list(values)}


# -- conditions -----------------------------------------------------------------------


def all_of(*conditions: dict[str, Any]) -> dict[str, Any]:
    """Conditions ANDed: merged into one document where their fields differ (or are
    operator documents with different operators), else under $and."""
    merged: dict[str, Any] = {}
    rest: list[dict[str, Any]] = []
    for condition in conditions:
        clash = False
        for name, value in condition.items():
            if name not in merged:
                continue
            old = merged[name]
            if (
                name.startswith("$")
                or not (_is_operators(old) and _is_operators(value))
                or set(old) & set(value)
            ):
                clash = True
        if clash:
            rest.append(condition)
            continue
        for name, value in condition.items():
            merged[name] = {**merged[name], **value} if name in merged else value
    if rest:
        return {"$and": [merged, *rest]} if merged else {"$and": rest}
    return merged


def _is_operators(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(k.startswith("$") for k in value)


def any_of(conditions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Conditions ORed; equalities on one same field become one $in (an index range)."""
    if len(conditions) == 1:
        return conditions[0]
    names = {name for condition in conditions for name in condition}
    if (
        len(names) == 1
        and all(len(condition) == 1 for condition in conditions)
        and not next(iter(names)).startswith("$")
        and not any(isinstance(v, dict) for condition in conditions for v in condition.values())
    ):
        (name,) = names
        values: list[Any] = []
        for condition in conditions:
            if condition[name] not in values:
                values.append(condition[name])
        return {name: values[0]} if len(values) == 1 else {name: {"$in": values}}
    return {"$or": list(conditions)}


def range_condition(prefix: str, low: str, high: str, q_low: Any, q_high: Any) -> dict[str, Any]:
    """R4 search.html#prefix on a stored [low, high] range against the searched range
    [q_low, q_high], both inclusive (sqlite_index._date_condition)."""
    if prefix == "eq":
        return all_of({low: {"$gte": q_low}}, {high: {"$lte": q_high}})
    if prefix == "ne":
        return {"$or": [{low: {"$lt": q_low}}, {high: {"$gt": q_high}}]}
    if prefix == "gt":
        return {high: {"$gt": q_high}}
    if prefix == "lt":
        return {low: {"$lt": q_low}}
    if prefix == "ge":
        return {high: {"$gte": q_low}}
    if prefix == "le":
        return {low: {"$lte": q_high}}
    if prefix == "sa":
        return {low: {"$gt": q_high}}
    if prefix == "eb":
        return {high: {"$lt": q_low}}
    if prefix == "ap":
        return all_of({high: {"$gte": q_low}}, {low: {"$lte": q_high}})
    raise ValueError(f"unknown date prefix {prefix!r}")


_OPERATOR = {"gt": "$gt", "ge": "$gte", "lt": "$lt", "le": "$lte"}


def _number_condition(term: NumberTerm, low: str, high: str) -> dict[str, Any]:
    """R4 search.html#number (sqlite_index._number_condition): eq/ne on the searched
    number's implicit range [t.low, t.high), gt/lt/ge/le on the number itself."""
    value, q_low, q_high = float(term.value), float(term.low), float(term.high)
    prefix = term.prefix
    if prefix == "eq":
        return all_of({low: {"$gte": q_low}}, {high: {"$lt": q_high}})
    if prefix == "ne":
        return {"$or": [{low: {"$lt": q_low}}, {high: {"$gte": q_high}}]}
    if prefix in ("gt", "ge", "lt", "le"):
        # the stored range's far end must pass the number (a decimal: low = high)
        name = high if prefix in ("gt", "ge") else low
        return {name: {_OPERATOR[prefix]: value}}
    if prefix == "sa":
        return {low: {"$gte": q_high}}
    if prefix == "eb":
        return {high: {"$lt": q_low}}
    if prefix == "ap":
        return all_of({high: {"$gte": q_low}}, {low: {"$lte": q_high}})
    raise ValueError(f"unknown number prefix {prefix!r}")


def starts_with(name: str, text: str) -> dict[str, Any]:
    return {name: {"$gte": text, "$lt": text + TOP}}


def regex_literal(text: str) -> str:
    """`text` as a regular expression that matches it literally, read the same by PCRE
    (MongoDB) and Python's re (mongomock): letters and digits as they are, other ASCII
    characters backslash-escaped, control characters (NUL included, which a MongoDB
    pattern cannot hold as such) as \\xHH."""
    out: list[str] = []
    for ch in text:
        if ch.isalnum() or ord(ch) > 0x7F:
            out.append(ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append("\\" + ch)
    return "".join(out)


def _uri_ancestors(uri: str) -> list[str]:
    """`uri` and its parents at "/" boundaries, for uri:above (sqlite_index)."""
    parts = uri.split("/")
    found = ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    return [p for p in found if p and not p.endswith(":") and not p.endswith(":/")]


def _token(term: TokenTerm, code: str = "c", system: str = "s") -> dict[str, Any]:
    condition: dict[str, Any] = {}
    if term.code is not None:
        condition[code] = term.code
    if term.system is not None:
        condition[system] = term.system
    return condition


def _quantity(key: str, term: QuantityTerm, low: str = "v", high: str = "v") -> dict[str, Any]:
    """A quantity entry (`qt`, low = high = "v") or a Range entry (`qr`, "lo" and "hi")."""
    condition: dict[str, Any] = {"p": param_code(key + ":canonical" if term.canonical else key)}
    if term.code is not None:
        condition["c"] = term.code
    if term.system is not None:
        condition["s"] = term.system
    return all_of(condition, _number_condition(term.number, low, high))


@functools.lru_cache(maxsize=1024)
def has_ranges(key: str) -> bool:
    """Whether the quantity parameter of index key "Type.code" can hold Range values (its
    expression names Range: the context-quantity parameters), as sqlite_index decides."""
    resource_type, _, code = key.partition(".")
    if resource_type not in RESOURCE_TYPES:
        return False
    param = search_parameters(resource_type).get(code)
    return param is not None and "Range" in param.expression


def _quantity_with_ranges(clause: Clause, paths: Paths) -> dict[str, Any]:
    """A quantity clause on a parameter with Range values: its `qt` entries or its `qr`
    entries (sqlite_index._quantity_clause_sql), each value one $elemMatch."""
    arrays = (("qt", "v", "v"), ("qr", "lo", "hi"))
    if clause.missing is not None:
        present = [
            {f"{paths.index}{array}": {"$elemMatch": {"p": param_code(clause.key)}}}
            for array, _, _ in arrays
        ]
        return {"$nor": present} if clause.missing else {"$or": present}
    matched = [
        {f"{paths.index}{array}": {"$elemMatch": _quantity(clause.key, term, low, high)}}
        for array, low, high in arrays
        for term in clause.terms
        if isinstance(term, QuantityTerm)
    ]
    if clause.modifier == "not":
        return {"$nor": matched}
    return {"$or": matched}


def _composite(key: str, term: CompositeTerm) -> dict[str, Any]:
    second = term.second
    canonical = isinstance(second, QuantityTerm) and second.canonical
    first = term.first
    # a reference first component is stored as (s, c) = (target type, target id)
    head = (
        _token(TokenTerm(first.raw, first.target_type, first.target_id))
        if isinstance(first, ReferenceTerm)
        else _token(first)
    )
    condition = {"p": param_code(key + ":canonical" if canonical else key), **head}
    if term.third is not None and isinstance(second, NumberTerm):
        # token$number$number: the first number in lo, the second in hi, each a decimal
        return all_of(
            condition,
            _number_condition(second, "lo", "lo"),
            _number_condition(term.third, "hi", "hi"),
        )
    if isinstance(second, NumberTerm):
        return all_of(condition, _number_condition(second, "lo", "hi"))
    if isinstance(second, TokenTerm):
        return {**condition, **_token(second, "vc", "vs")}
    if isinstance(second, QuantityTerm):
        if second.code is not None:
            condition["vc"] = second.code
        if second.system is not None:
            condition["vs"] = second.system
        return all_of(condition, _number_condition(second.number, "lo", "hi"))
    if isinstance(second, DateTerm):
        dates = range_condition(second.prefix, "lo", "hi", second.low, second.high)
        return all_of(condition, dates)
    return all_of(condition, starts_with("vc", second.normalized))


def _term(clause: Clause, term: object) -> dict[str, Any]:
    """The condition on one index entry for one searched value (sqlite_index)."""
    if isinstance(term, TokenTerm):
        return _token(term)
    if isinstance(term, StringTerm):
        if len(term.normalized) > MAX_NORMALIZED:
            return {"n": {"$in": []}}
        if clause.modifier == "exact":
            return {"n": term.normalized, "x": term.text}
        if clause.modifier == "contains":
            return {"n": {"$regex": regex_literal(term.normalized)}}
        return starts_with("n", term.normalized)
    if isinstance(term, ReferenceTerm):
        if term.target_type is None:
            return {"i": term.target_id}
        return {"i": term.target_id, "t": term.target_type}
    if isinstance(term, DateTerm):
        return range_condition(term.prefix, "lo", "hi", term.low, term.high)
    if isinstance(term, NumberTerm):
        return _number_condition(term, "lo", "hi")
    if isinstance(term, QuantityTerm):
        return _quantity(clause.key, term)
    if isinstance(term, CompositeTerm):
        return _composite(clause.key, term)
    if isinstance(term, UriTerm):
        if clause.modifier == "below":
            return starts_with("c", term.value)
        if clause.modifier == "above":
            return {"c": {"$in": _uri_ancestors(term.value)}}
        return {"c": term.value}
    raise TypeError(f"unknown search term {type(term).__name__}")


@dataclass(frozen=True)
class Paths:
    """Where a condition finds the index arrays, the id and lastUpdated: on a resource
    document, or inside one of its contained entries (`idx.cn`)."""

    index: str
    id: str
    last_updated: str


DOCUMENT = Paths(INDEX_FIELD + ".", "id", "lastUpdated")
CONTAINED = Paths("", "i", "lu")


def _column_clause(clause: Clause, paths: Paths) -> dict[str, Any]:
    """_id and _lastUpdated, fields of the document itself."""
    if clause.missing is not None:
        return NOTHING if clause.missing else {}
    conditions: list[dict[str, Any]] = []
    for term in clause.terms:
        if isinstance(term, TokenTerm):
            conditions.append({paths.id: term.code})
        elif isinstance(term, DateTerm):
            low, high = iso_utc(term.low), iso_utc(term.high)
            field = paths.last_updated
            conditions.append(range_condition(term.prefix, field, field, low, high))
    return any_of(conditions)


def clause_filter(clause: Clause, paths: Paths = DOCUMENT) -> dict[str, Any]:
    """The filter of one clause (not _text / _content, see `_text_filter`)."""
    if clause.code in ("_id", "_lastUpdated"):
        return _column_clause(clause, paths)
    if clause.param_type == "quantity" and has_ranges(clause.key):
        return _quantity_with_ranges(clause, paths)
    array = ARRAY_OF[clause.param_type]
    key = clause.key
    if clause.missing is not None:
        present = {f"{paths.index}{array}": {"$elemMatch": {"p": param_code(key)}}}
        return {"$nor": [present]} if clause.missing else present
    if clause.modifier == "text":  # token :text searches the codes' text and display
        array, key = "st", key + ":text"
    elif clause.modifier == "of-type":
        key += ":of-type"
    elif clause.modifier == "identifier":  # reference :identifier: Reference.identifier
        array, key = "tk", key + IDENTIFIER
    conditions = [_term(clause, term) for term in clause.terms]
    own = {} if clause.param_type in _PARAM_PER_TERM else {"p": param_code(key)}
    values = any_of(conditions)
    # One $elemMatch when the values fold into one condition (codes into one $in);
    # else one per value under a top-level $or, which the planner answers as a union
    # of index ranges (an $or inside $elemMatch would leave the values unbounded).
    alternatives = [values] if "$or" not in values else conditions
    matched = [
        {f"{paths.index}{array}": {"$elemMatch": all_of(own, value)}} for value in alternatives
    ]
    if clause.modifier == "not":
        return {"$nor": matched}
    return matched[0] if len(matched) == 1 else {"$or": matched}


# -- sorting and paging -----------------------------------------------------------------


def sort_stages(sorts: Sequence[SortKey], entry: bool = False) -> list[dict[str, Any]]:
    """$addFields computing k<i> (the sort value) and m<i> (1 when it is missing).

    With `entry`, on the rows of `entry_stages` (a resource itself or one of its
    contained resources, in `e`): the values are the row's own."""
    return [*sort_values(sorts, entry), missing_flags(sorts)]


def sort_values(sorts: Sequence[SortKey], entry: bool = False) -> list[dict[str, Any]]:
    """The $addFields stages computing k<i> of `sort_stages`, without the flags.

    The value list is built first and reduced in a second stage: `$min` of an array
    field works on MongoDB and mongomock alike, `$min` of an inline $map only on MongoDB."""
    values: dict[str, Any] = {}
    reduced: dict[str, Any] = {}
    chosen: dict[str, Any] = {}
    root = f"${ENTRY}." if entry else f"${INDEX_FIELD}."
    for index, sort in enumerate(sorts):
        name = f"k{index}"
        if sort.code == "_id":
            # a contained resource sorts by its local id, as in SQLite's contained table
            values[name] = {"$cond": [_ITSELF, "$id", f"${ENTRY}.i"]} if entry else "$id"
        elif sort.code == "_lastUpdated":
            values[name] = "$lastUpdated"  # a contained resource's is its container's
        elif sort.code == "_score":
            values[name] = {"$literal": None}  # filled in from the hits (_score_page)
        else:
            array = f"{root}{ARRAY_OF[sort.param_type]}"
            column = SORT_FIELD[sort.param_type][1 if sort.descending else 0]
            keys = [(name, param_code(sort.key))]
            if sort.param_type == "quantity":
                # the canonical UCUM value where the unit converts (100 mg/dL sorts with
                # 1 g/L), else the value as stored: sqlite_index._sort_sql's coalesce
                keys.append((f"c{index}", param_code(sort.key + ":canonical")))
                chosen[name] = {"$ifNull": [f"$c{index}", f"${name}"]}
            for field, code in keys:
                entries = {
                    "$filter": {
                        "input": {"$ifNull": [array, []]},
                        "as": "e",
                        "cond": {"$eq": ["$$e.p", code]},
                    }
                }
                values[field] = {"$map": {"input": entries, "as": "e", "in": f"$$e.{column}"}}
                reduced[field] = {("$max" if sort.descending else "$min"): f"${field}"}
    stages: list[dict[str, Any]] = [{"$addFields": values}]
    if reduced:
        stages.append({"$addFields": reduced})
    if chosen:
        stages.append({"$addFields": chosen})
    return stages


def missing_flags(sorts: Sequence[SortKey]) -> dict[str, Any]:
    """The $addFields stage setting m<i> to 1 where k<i> is missing, else 0."""
    return {"$addFields": {
        f"m{index}": {"$cond": [{"$eq": [{"$ifNull": [f"$k{index}", None]}, None]}, 1, 0]}
        for index in range(len(sorts))
    }}  # fmt: skip


# -- contained resources as rows ------------------------------------------------------

# On the rows of entry_stages: the row of the resource itself (n = 0) or of its n-th
# contained resource (idx.cn[n - 1]), whose index entries are in ENTRY.
ENTRY = "e"
_ITSELF = {"$eq": ["$n", 0]}


def entry_stages() -> list[dict[str, Any]]:
    """Stages turning each resource document into rows: itself (n 0, with its own index
    entries in `e`) and each of its contained resources (n 1, 2, ..., their entries in
    `e`). The unwound array starts with a null for the resource itself: mongomock
    evaluates no expression inside an array literal, MongoDB and it read a constant."""
    return [
        {"$addFields": {"u": {"$concatArrays": [
            [None], {"$ifNull": [f"${INDEX_FIELD}.cn", []]},
        ]}}},  # fmt: skip
        {"$unwind": {"path": "$u", "includeArrayIndex": "n"}},
        {"$addFields": {ENTRY: {"$cond": [_ITSELF, f"${INDEX_FIELD}", "$u"]}}},
    ]


def prefixed(condition: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A condition on one contained entry (CONTAINED paths) as a condition on the field
    `prefix` holding that entry: field names get the prefix, through $and / $or / $nor;
    what is inside a field's value (an $elemMatch on its elements) is left as it is."""
    out: dict[str, Any] = {}
    for name, value in condition.items():
        if name in ("$and", "$or", "$nor"):
            out[name] = [prefixed(part, prefix) for part in value]
        elif name.startswith("$"):
            raise ValueError(f"cannot prefix the operator {name}")
        else:
            out[prefix + name] = value
    return out


def entry_after(rid: int) -> dict[str, Any]:
    """The rows after the row a cursor's integer names, in (_id, n) order."""
    doc_id, n = row_position(rid)
    return {"$or": [{"_id": {"$gt": doc_id}}, {"_id": doc_id, "n": {"$gt": n}}]}


def sort_spec(sorts: Sequence[SortKey]) -> dict[str, int]:
    spec: dict[str, int] = {}
    for index, sort in enumerate(sorts):
        spec[f"m{index}"] = 1
        spec[f"k{index}"] = -1 if sort.descending else 1
    spec["_id"] = 1
    return spec


def seek(
    sorts: Sequence[SortKey], position: cursors.Position, after: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The documents after `position`: lexicographic over the sort keys (missing values
    last in both directions), then `_id` (sqlite_index.seek), or among equal keys the
    condition `after` (entry_after, for rows of contained resources)."""
    values, rid = position
    alternatives: list[dict[str, Any]] = []
    equal: dict[str, Any] = {}
    for index, (sort, value) in enumerate(zip(sorts, values, strict=True)):
        key, flag = f"k{index}", f"m{index}"
        if value is not None:
            later = {key: {"$lt" if sort.descending else "$gt": value}}
            alternatives.append({**equal, "$or": [{flag: 1}, later]})
            equal = {**equal, flag: 0, key: value}
        else:
            equal = {**equal, flag: 1}
    if after is None:
        alternatives.append({**equal, "_id": {"$gt": document_id(rid)}})
    else:
        alternatives.append(all_of(equal, after))
    return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}


def cursor_rid(doc_id: Any, n: int = 0) -> int:
    """The integer a keyset cursor carries (search.cursor) for a document `_id`: its
    bytes behind a tag byte, 1 for a string ("<tenant>/<type>/<id>", the store's key),
    2 for an ObjectId; 3 for the n-th contained resource of the document with that
    ObjectId (entry_stages), its 12 bytes then n in 4."""
    if n:
        if not isinstance(doc_id, ObjectId):
            raise TypeError(f"contained rows are of ObjectId documents, not {doc_id!r}")
        return int.from_bytes(b"\x03" + doc_id.binary + n.to_bytes(4, "big"), "big")
    if isinstance(doc_id, ObjectId):
        return int.from_bytes(b"\x02" + doc_id.binary, "big")
    return int.from_bytes(b"\x01" + str(doc_id).encode(), "big")


def row_position(rid: int) -> tuple[Any, int]:
    """The (_id, n) a cursor's integer names (cursor_rid reversed; n 0 for a resource
    itself); 400 for one that names none."""
    raw = rid.to_bytes(max((rid.bit_length() + 7) // 8, 1), "big") if rid > 0 else b""
    if raw[:1] == b"\x03" and len(raw) == 17:
        return ObjectId(raw[1:13]), int.from_bytes(raw[13:], "big")
    return document_id(rid), 0


def document_id(rid: int) -> Any:
    """The `_id` a cursor's integer names (cursor_rid reversed); 400 for one that
    names none (a cursor of another store)."""
    raw = rid.to_bytes(max((rid.bit_length() + 7) // 8, 1), "big") if rid > 0 else b""
    if raw[:1] == b"\x02" and len(raw) == 13:
        return ObjectId(raw[1:])
    if raw[:1] == b"\x01":
        try:
            return raw[1:].decode()
        except UnicodeDecodeError:
            pass
    raise FHIRError(400, [Issue(
        "invalid", "'_cursor' is not a cursor of this search", expression=(cursors.PARAMETER,)
    )])  # fmt: skip


def sort_order(sorts: Sequence[SortKey]) -> Any:
    """The order of a sorted page on documents carrying k<i> and _id, as MongoDB sorts
    them in the pipeline: each key ascending or descending, missing values last, then
    _id."""

    def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
        for index, sort in enumerate(sorts):
            left, right = a.get(f"k{index}"), b.get(f"k{index}")
            if left is None or right is None:
                if left is None and right is None:
                    continue
                return 1 if left is None else -1
            if left != right:
                order = -1 if left < right else 1
                return -order if sort.descending else order
        return -1 if a["_id"] < b["_id"] else 1 if a["_id"] > b["_id"] else 0

    return functools.cmp_to_key(compare)


