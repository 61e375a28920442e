"""Parsing of FHIR search parameters into a `SearchQuery` (R4 search.html).

A repeated parameter is an AND, a comma inside one value an OR (search.html#combining);
`\\,` `\\|` `\\$` and `\\\\` escape those characters (search.html#escaping).

Supported now: token (code, system|code, |code, system|; :not, :text, :of-type; :in,
:not-in, :above, :below through terminology.search_modifiers), string
(starts-with on the normalised text; :exact, :contains), reference (Type/id, id,
absolute URL, :Type, :identifier with a token's [system]|value on Reference.identifier),
date, number and quantity (prefixes eq ne gt lt ge le sa eb ap;
quantity as value, value|system|code, value||unit, UCUM units compared canonically),
uri (:below, :above), the composites of search.composites (`$`-separated: all 46 R4
ones), `_id`, `_lastUpdated`, `:missing` on all of these, and `_count`, `_offset`,
`_cursor` (keyset paging, search.cursor), `_sort` (several keys), `_total`. The special
type (Location near) gives 400 "not supported".
Unknown parameters are ignored and listed in `SearchQuery.ignored`, unless the client
asked for strict handling (`Prefer: handling=strict`), which makes them a 400.

Error messages name the parameter but never repeat its value: search values are often
patient data (names, identifiers, birth dates).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from conformance.definitions import (
    RESOURCE_TYPES,
    SearchParamDef,
    common_parameters,
    search_parameters,
)
from fhir_server.errors import FHIRError, Issue
from search import chain
from search.chain import LinkClause
from search import cursor as cursors
from search.composites import Component, components
from search import custom
from search.extract import index_key
from search.fulltext import FIELD_OF_PARAMETER, phrases
from search.result import RESULT_PARAMETERS, ResultParams, parse_result_params
from search.units import UCUM, comparable_unit, unit_problem
from search.values import (
    DATE_MAX,
    DATE_MIN,
    MAX_STRING,
    date_range,
    normalize_text,
    number_precision,
    parse_number,
    split_reference,
)

DEFAULT_COUNT = 20
MAX_COUNT = 1000
SUPPORTED_TYPES = frozenset(
    {"token", "string", "reference", "date", "number", "quantity", "uri", "composite"}
)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
DATE_PREFIXES = PREFIXES
SORTABLE_TYPES = frozenset({"token", "string", "date", "number", "quantity", "uri", "reference"})
MAX_SORT_KEYS = 5
# Bounds on the size of one search, so that it compiles within SQLite's limits (bound
# variables, expression depth) and a client cannot ask for unbounded work: comma-separated
# values of one parameter (ORed), filter parameters (ANDed) and values over all of them,
# and _include/_revinclude parameters. Beyond them: 400 naming the parameter.
MAX_VALUES = 200
MAX_PARAMETERS = 64
MAX_SEARCH_VALUES = 1000
MAX_INCLUDES = 32
# _offset: deeper pages go through the keyset cursor of the next link (search.cursor)
MAX_OFFSET = 1_000_000
_MAX_DIGITS = 4000  # int() refuses longer digit strings (sys.get_int_max_str_digits)
# ap: "approximately ... 10% of the stated value" (search.html#prefix)
APPROXIMATION = Decimal("0.1")
TOTAL_MODES = ("none", "estimate", "accurate")

# Paging and sorting: each at most once per search.
_SETTINGS = frozenset({"_count", "_offset", "_sort", "_total", cursors.PARAMETER})
# Handled by the REST layer (content negotiation), not a filter.
_TRANSPARENT = frozenset({"_format", "_pretty"})
# Known FHIR parameters this server does not apply yet: ignored (and reported), or a
# 400 under strict handling.
_NOT_APPLIED = frozenset(
    {
        "_include", "_revinclude", "_summary", "_elements", "_contained", "_containedType",
        "_list", "_query", "_filter", "_type", "_score",
    }
)  # fmt: skip
_MODIFIERS = {
    # in / not-in / above / below: rewritten into plain token clauses by the terminology
    # service before a search runs (terminology.search_modifiers)
    "token": frozenset({"missing", "not", "text", "of-type", "in", "not-in", "above", "below"}),
    "string": frozenset({"missing", "exact", "contains"}),
    # plus a resource type, e.g. subject:Patient
    "reference": frozenset({"missing", "identifier"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"missing", "below", "above"}),
    "composite": frozenset({"missing"}),
}
_KNOWN_MODIFIERS = frozenset(
    {"missing", "exact", "contains", "text", "not", "above", "below", "in", "not-in",
     "of-type", "identifier", "type", "iterate"}
)  # fmt: skip


@dataclass(frozen=True)
class TokenTerm:
    raw: str
    system: str | None  # None: any system; "": no system (|code)
    code: str | None  # None: any code (system|)


@dataclass(frozen=True)
class StringTerm:
    raw: str
    text: str  # unescaped, as given (for :exact)
    normalized: str


@dataclass(frozen=True)
class ReferenceTerm:
    raw: str
    target_type: str | None  # None: any type
    target_id: str  # the id, or the whole URL for an absolute reference


@dataclass(frozen=True)
class DateTerm:
    raw: str
    prefix: str
    low: int  # microseconds since 1970-01-01T00:00:00Z, inclusive
    high: int  # inclusive


@dataclass(frozen=True)
class NumberTerm:
    """A searched number: `value` exactly (gt lt ge le), and the range [low, high) its
    precision implies (eq ne sa eb); for ap the inclusive range within 10%."""

    raw: str
    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal


@dataclass(frozen=True)
class QuantityTerm:
    """A number with a unit: system None means any system; code None any unit. With
    `canonical` the numbers are in the canonical unit `code` (search.units) and match the
    "<key>:canonical" rows."""

    raw: str
    number: NumberTerm
    system: str | None
    code: str | None
    canonical: bool = False


@dataclass(frozen=True)
class UriTerm:
    raw: str
    value: str


@dataclass(frozen=True)
class CompositeTerm:
    """`a$b` or `a$b$c`: the components of one element (search.composites). `first` is a
    TokenTerm except for reference$token composites; `third` is set only for the
    token$number$number ones, whose `second` is then a NumberTerm."""

    raw: str
    first: TokenTerm | ReferenceTerm
    second: TokenTerm | QuantityTerm | StringTerm | DateTerm | NumberTerm
    third: NumberTerm | None = None


Term = (
    TokenTerm | StringTerm | ReferenceTerm | DateTerm | NumberTerm | QuantityTerm | UriTerm
    | CompositeTerm
)


@dataclass(frozen=True)
class Clause:
    """One parameter occurrence: its terms are ORed; the clauses of a query are ANDed.

    `key` is the index key (search.extract.index_key) or, for `_id` and `_lastUpdated`,
    the code itself (they are columns of the resources table). `missing` is set, and
    `terms` empty, for `:missing=true|false`. A reference clause with the modifier
    "identifier" has TokenTerms, matched against the token rows under
    key + search.extract.IDENTIFIER.
    """

    code: str
    param_type: str
    key: str
    modifier: str | None
    terms: tuple[Term, ...]
    missing: bool | None = None

    @property
    def name(self) -> str:
        return f"{self.code}:{self.modifier}" if self.modifier else self.code


@dataclass(frozen=True)
class SortKey:
    code: str
    key: str
    param_type: str
    descending: bool


@dataclass(frozen=True)
class SearchQuery:
    resource_type: str | None
    clauses: tuple[Clause, ...] = ()
    count: int = DEFAULT_COUNT
    offset: int = 0
    sorts: tuple[SortKey, ...] = ()  # _sort keys, most significant first
    total: str = "accurate"  # none | estimate | accurate
    # Keyset paging: the opaque cursor given (_cursor) and the position it names.
    cursor: str | None = None
    position: cursors.Position | None = None
    ignored: tuple[tuple[str, str], ...] = ()  # unknown or not applied, as received
    # Chains, _has, compartment and multi-type clauses (search.chain), ANDed with clauses.
    links: tuple[LinkClause, ...] = ()
    types: tuple[str, ...] = ()  # _type on a system search
    result: ResultParams = ResultParams()  # _include, _revinclude, _summary, _elements

    def to_params(self) -> list[tuple[str, str]]:
        """What was understood, as (name, value) pairs, for the self and next links."""
        params: list[tuple[str, str]] = []
        for clause in self.clauses:
            if clause.missing is not None:
                params.append((clause.name, "true" if clause.missing else "false"))
            else:
                params.append((clause.name, ",".join(term.raw for term in clause.terms)))
        if self.sorts:
            params.append(("_sort", self.sort_signature))
        params.append(("_count", str(self.count)))
        if self.offset:
            params.append(("_offset", str(self.offset)))
        if self.cursor is not None:
            params.append((cursors.PARAMETER, self.cursor))
        if self.total != "accurate":
            params.append(("_total", self.total))
        return params

    @property
    def sort(self) -> SortKey | None:
        """The first _sort key, if any."""
        return self.sorts[0] if self.sorts else None

    @property
    def sort_signature(self) -> str:
        """The _sort value as understood, e.g. "-date,name" ("" when unsorted)."""
        return ",".join(("-" if key.descending else "") + key.code for key in self.sorts)

    def at_offset(self, offset: int) -> SearchQuery:
        """The same search at another page offset (for next/previous links)."""
        return replace(self, offset=max(offset, 0), cursor=None, position=None)

    def after(self, cursor: str | None) -> SearchQuery:
        """The same search from the page after `cursor` (SearchPage.next_cursor), or from
        the first page for None. Raises FHIRError 400 naming _cursor for a cursor not
        made by this server for a search with the same _sort."""
        if cursor is None:
            return replace(self, cursor=None, position=None)
        position = cursors.decode(cursor, self.sort_signature, len(self.sorts))
        return replace(self, offset=0, cursor=cursor, position=position)


def _error(name: str, diagnostics: str, code: str = "invalid") -> FHIRError:
    return FHIRError(400, [Issue(code, diagnostics, expression=(name,))])


def _too_costly(name: str, diagnostics: str) -> FHIRError:
    return _error(name, diagnostics, "too-costly")


def _not_supported(name: str, diagnostics: str) -> FHIRError:
    return _error(name, diagnostics, code="not-supported")


def split_escaped(value: str, separator: str) -> list[str]:
    """Split on `separator` where it is not escaped by a backslash; pieces stay escaped."""
    if "\\" not in value:
        return value.split(separator)
    pieces: list[str] = []
    current: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            current.append(ch)
            current.append(next(chars, ""))
        elif ch == separator:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    return pieces


_ESCAPE = re.compile(r"\\([,|$\\])")


def unescape(value: str) -> str:
    return _ESCAPE.sub(r"\1", value) if "\\" in value else value


def _token_term(name: str, raw: str) -> TokenTerm:
    parts = split_escaped(raw, "|")
    if len(parts) == 1:
        return TokenTerm(raw, None, unescape(parts[0]))
    if len(parts) == 2 and (parts[0] or parts[1]):
        return TokenTerm(raw, unescape(parts[0]), unescape(parts[1]) or None)
    raise _error(name, f"Search parameter '{name}' needs [system]|[code] or code")


def _of_type_term(name: str, raw: str) -> TokenTerm:
    """identifier:of-type=[type system]|[type code]|[value], matched against the
    "<key>:of-type" rows (search.extract)."""
    parts = split_escaped(raw, "|")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise _error(name, f"Search parameter '{name}' needs [type system]|[type code]|[value]")
    system, code, value = (unescape(part) for part in parts)
    return TokenTerm(raw, system, f"{code}|{value}")


def _reference_term(
    name: str, param: SearchParamDef, raw: str, type_modifier: str | None, base_url: str | None
) -> ReferenceTerm:
    value = unescape(raw)
    if base_url and value.startswith(base_url + "/"):
        # a reference to this server, stored as the relative Type/id
        value = value[len(base_url) + 1 :]
    if "://" in value or value.startswith("urn:"):
        target = split_reference(value)
        return ReferenceTerm(raw, None, target[1] if target else value)
    if "/" in value:
        target = split_reference(value)
        if target is None:
            raise _error(name, f"Search parameter '{name}' needs Type/id, an id or a URL")
        if type_modifier and target[0] != type_modifier:
            raise _error(name, f"Search parameter '{name}' has a reference of another type")
        if param.targets and target[0] not in param.targets:
            raise _error(name, f"{target[0]} is not a target type of search parameter '{name}'")
        return ReferenceTerm(raw, target[0], target[1])
    return ReferenceTerm(raw, type_modifier, value)


def _date_term(name: str, raw: str) -> DateTerm:
    prefix, value = _prefixed(name, unescape(raw))
    # A '+' in a time zone that arrived unencoded in a URL reads as a space.
    found = date_range(value.replace(" ", "+"))
    if found is None:
        raise _error(name, f"Search parameter '{name}' needs a FHIR date, e.g. 2024-03-01")
    low, high = found
    if prefix == "ap":
        # "10% of the gap between now and the date" (search.html#prefix), on both sides
        gap = abs(now_us() - (low + high) // 2) // 10
        low, high = max(low - gap, DATE_MIN), min(high + gap, DATE_MAX)
    return DateTerm(raw, prefix, low, high)


def now_us() -> int:
    """Now, in microseconds since 1970 (for date ap; tests replace it)."""
    return time.time_ns() // 1000


def _prefixed(name: str, value: str) -> tuple[str, str]:
    """(prefix, rest) of a number, date or quantity value; eq when it has none."""
    if len(value) > 2 and value[:2].isalpha():
        if value[:2] not in PREFIXES:
            raise _error(name, f"Search parameter '{name}' has an unknown prefix")
        return value[:2], value[2:]
    return "eq", value


def _number_term(name: str, raw: str, text: str | None = None) -> NumberTerm:
    prefix, value = _prefixed(name, unescape(raw) if text is None else text)
    number = parse_number(value)
    if number is None:
        raise _error(name, f"Search parameter '{name}' needs a number, e.g. 5.4")
    half = number_precision(value, number)
    if prefix == "ap":
        half = max(half, abs(number) * APPROXIMATION)
    return NumberTerm(raw, prefix, number, number - half, number + half)


def _quantity_term(name: str, raw: str) -> QuantityTerm:
    """[prefix]value, [prefix]value|system|code or [prefix]value||unit
    (search.html#quantity)."""
    parts = split_escaped(raw, "|")
    if len(parts) not in (1, 3) or (len(parts) == 3 and not parts[2]):
        raise _error(name, f"Search parameter '{name}' needs value, value|system|code or value||unit")
    number = _number_term(name, raw, unescape(parts[0]))
    if len(parts) == 1:
        return QuantityTerm(raw, number, None, None)
    system, code = unescape(parts[1]), unescape(parts[2])
    found = comparable_unit(code) if system == UCUM else None
    if found is None:
        problem = unit_problem(code) if system == UCUM else None
        if problem is not None:  # a typo would otherwise be a silent "no match"
            raise _error(name, f"Search parameter '{name}': {problem}")
        return QuantityTerm(raw, number, system or None, code)
    unit, factor, offset = found
    # factor > 0 for every UCUM unit, so the order of the ends is kept
    canonical = replace(
        number,
        value=number.value * factor + offset,
        low=number.low * factor + offset,
        high=number.high * factor + offset,
    )
    return QuantityTerm(raw, canonical, None, unit, canonical=True)


def _composite_term(
    name: str, param: SearchParamDef, parts: tuple[Component, ...], raw: str
) -> CompositeTerm:
    values = split_escaped(raw, "$")
    if len(values) != len(parts) or not all(values):
        raise _error(name, f"Search parameter '{name}' needs {len(parts)} values joined by $")
    first: TokenTerm | ReferenceTerm
    if parts[0].type == "reference":
        first = _reference_term(name, param, values[0], None, None)
    else:
        first = _token_term(name, values[0])
    second: TokenTerm | QuantityTerm | StringTerm | DateTerm | NumberTerm
    kind = parts[1].type
    if kind == "token":
        second = _token_term(name, values[1])
    elif kind == "quantity":
        second = _quantity_term(name, values[1])
    elif kind == "date":
        second = _date_term(name, values[1])
    elif kind == "number":
        second = _number_term(name, values[1])
    else:
        text = unescape(values[1])
        second = StringTerm(values[1], text, normalize_text(text))
    third = _number_term(name, values[2]) if len(parts) == 3 else None
    return CompositeTerm(raw, first, second, third)


def _terms(
    resource_type: str | None,
    name: str,
    param: SearchParamDef,
    modifier: str | None,
    value: str,
    base_url: str | None,
) -> tuple[Term, ...]:
    terms: list[Term] = []
    parts: tuple[Component, ...] = ()
    if param.type == "composite":
        parts = components(resource_type or "", param.code) or ()
    for raw in split_escaped(value, ","):
        if not raw:
            raise _error(name, f"Search parameter '{name}' has an empty value in its list")
        if param.type == "token" and modifier in ("in", "not-in"):  # a ValueSet canonical
            terms.append(UriTerm(raw, unescape(raw)))
        elif param.type == "token" and modifier in ("above", "below"):
            term = _token_term(name, raw)
            if not term.system or not term.code:
                raise _error(name, f"Search parameter '{name}' takes system|code")
            terms.append(term)
        elif param.type == "token" and modifier == "of-type":
            terms.append(_of_type_term(name, raw))
        elif param.type == "token" and modifier != "text":
            terms.append(_token_term(name, raw))
        elif param.type in ("string", "token"):
            text = unescape(raw)
            if len(text) >= MAX_STRING:
                # strings are indexed by their first MAX_STRING characters: a longer value
                # (or one as long, for :exact) would silently match nothing or too much
                raise _error(name, f"Search parameter '{name}' takes text of at most "
                                   f"{MAX_STRING - 1} characters (strings are indexed by "
                                   f"their first {MAX_STRING})", "not-supported")
            terms.append(StringTerm(raw, text, normalize_text(text)))
        elif param.type == "reference" and modifier == "identifier":
            # Reference.identifier, a token (the "<key>:identifier" rows of search.extract)
            terms.append(_token_term(name, raw))
        elif param.type == "reference":
            terms.append(_reference_term(name, param, raw, modifier, base_url))
        elif param.type == "number":
            terms.append(_number_term(name, raw))
        elif param.type == "quantity":
            terms.append(_quantity_term(name, raw))
        elif param.type == "uri":
            terms.append(UriTerm(raw, unescape(raw)))
        elif param.type == "composite":
            terms.append(_composite_term(name, param, parts, raw))
        else:
            terms.append(_date_term(name, raw))
    return tuple(terms)


def _check_modifier(name: str, param: SearchParamDef, modifier: str) -> None:
    if modifier in _MODIFIERS[param.type]:
        return
    if param.type == "reference" and modifier in RESOURCE_TYPES:
        if param.targets and modifier not in param.targets:
            raise _error(name, f"{modifier} is not a target type of search parameter '{name}'")
        return
    if modifier in _KNOWN_MODIFIERS:
        raise _not_supported(
            name, f"Modifier ':{modifier}' on {param.type} parameter '{name}' is not supported yet"
        )
    raise _error(name, f"Unknown modifier ':{modifier}' on search parameter '{name}'")


def _clause(
    resource_type: str | None, name: str, param: SearchParamDef, value: str, base_url: str | None
) -> Clause:
    code, _, modifier_text = name.partition(":")
    modifier = modifier_text or None
    if param.type not in SUPPORTED_TYPES or (
        param.type == "composite" and components(resource_type or "", code) is None
    ):
        raise _not_supported(
            name, f"Search parameter '{code}' of type {param.type} is not supported yet"
        )
    key = code if code in ("_id", "_lastUpdated") else index_key(resource_type or "", code)
    if modifier is not None:
        _check_modifier(name, param, modifier)
        if code in ("_id", "_lastUpdated") and modifier != "missing":
            raise _not_supported(name, f"Modifier ':{modifier}' on '{code}' is not supported yet")
    if modifier == "missing":
        if value not in ("true", "false"):
            raise _error(name, f"Search parameter '{name}' takes true or false")
        return Clause(code, param.type, key, modifier, (), missing=value == "true")
    terms = _terms(resource_type, name, param, modifier, value, base_url)
    return Clause(code, param.type, key, modifier, terms)


def _text_clause(name: str, value: str) -> Clause:
    """_text / _content: comma-separated alternatives of plain words (search.fulltext)."""
    code, _, modifier = name.partition(":")
    if modifier:
        raise _error(name, f"'{code}' takes no modifier")
    terms: list[Term] = []
    for raw in split_escaped(value, ","):
        text = unescape(raw)
        try:
            phrases(text)
        except ValueError as exc:
            raise _error(name, f"'{code}' takes {exc} per value") from None
        terms.append(StringTerm(raw, text, text))
    return Clause(code, "special", code, None, tuple(terms))


def _int(name: str, value: str, low: int, high: int | None = None) -> int:
    # isascii: str.isdigit also accepts digits that int() refuses ("²")
    if not (value.isascii() and value.isdigit()) or len(value) > _MAX_DIGITS:
        number = None
    else:
        number = int(value)
    if number is None or number < low or (high is not None and number > high):
        upper = f" and at most {high}" if high is not None else ""
        raise _error(name, f"'{name}' needs a whole number of at least {low}{upper}")
    return number


def _check_size(params: list[tuple[str, str]]) -> None:
    """400 naming the first parameter that takes a search beyond MAX_VALUES,
    MAX_PARAMETERS, MAX_SEARCH_VALUES or MAX_INCLUDES (see there)."""
    filters = 0
    values = 0
    includes = 0
    for name, value in params:
        base = name.partition(":")[0]
        if base in ("_include", "_revinclude"):
            includes += 1
            if includes > MAX_INCLUDES:
                raise _too_costly(name, f"A search takes at most {MAX_INCLUDES} _include and "
                                  "_revinclude parameters")  # fmt: skip
            continue
        if base in RESULT_PARAMETERS or base in _SETTINGS or base in _TRANSPARENT:
            continue
        filters += 1
        if filters > MAX_PARAMETERS:
            raise _too_costly(name, f"A search takes at most {MAX_PARAMETERS} search parameters")
        count = value.count(",") + 1
        if count > MAX_VALUES:
            raise _too_costly(name, f"Search parameter '{name}' takes at most {MAX_VALUES} values")
        values += count
        if values > MAX_SEARCH_VALUES:
            raise _too_costly(
                name, f"A search takes at most {MAX_SEARCH_VALUES} values over all parameters"
            )


def _sort_keys(
    resource_type: str | None, params: Mapping[str, SearchParamDef], value: str
) -> tuple[SortKey, ...]:
    """_sort=a,-b: several keys, most significant first (search.html#sort)."""
    texts = value.split(",")
    if len(texts) > MAX_SORT_KEYS:
        raise _error("_sort", f"'_sort' takes at most {MAX_SORT_KEYS} keys")
    keys = tuple(_sort_key(resource_type, params, text) for text in texts)
    if len({key.code for key in keys}) != len(keys):
        raise _error("_sort", "'_sort' names a parameter twice")
    return keys


def _sort_key(
    resource_type: str | None, params: Mapping[str, SearchParamDef], value: str
) -> SortKey:
    descending = value.startswith("-")
    code = value[1:] if descending else value
    if code == "_score":  # relevance to _text/_content (search.fulltext): best first
        return SortKey("_score", "_score", "score", descending)
    param = params.get(code)
    if param is None:
        # named only when it looks like a parameter code: the value is client text
        shown = f" '{code}'" if re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", code) else ""
        raise _error("_sort", f"Cannot sort on unknown search parameter{shown}")
    if code not in ("_id", "_lastUpdated") and param.type not in SORTABLE_TYPES:
        raise _not_supported(
            "_sort", f"Sorting on {param.type} parameter '{code}' is not supported yet"
        )
    key = code if code in ("_id", "_lastUpdated") else index_key(resource_type or "", code)
    return SortKey(code, key, param.type, descending)


def parse_search(
    resource_type: str | None,
    params: list[tuple[str, str]],
    strict: bool = False,
    base_url: str | None = None,
) -> SearchQuery:
    """Parse URL query parameters (decoded, in order) of a search on `resource_type`
    (None: a search across all types, where only the common parameters apply).

    `base_url` (e.g. "http://localhost:8080/fhir", no trailing slash) is this server's
    base: a reference search on `<base_url>/Patient/1` then matches the stored
    relative reference Patient/1.

    Raises FHIRError 400 naming the parameter for bad or unsupported input, and for
    unknown parameters when `strict`.
    """
    known: Mapping[str, SearchParamDef]
    if resource_type is None:
        known = common_parameters()
    elif resource_type in RESOURCE_TYPES:
        known = search_parameters(resource_type)
    else:
        raise FHIRError(400, [Issue("not-supported", "Unknown resource type")])
    _check_size(params)
    known = custom.parameters(resource_type, known, params)  # runtime SearchParameters

    clauses: list[Clause] = []
    ignored: list[tuple[str, str]] = []
    settings: dict[str, str] = {}
    links: list[LinkClause] = []
    result_params: list[tuple[str, str]] = []
    types: tuple[str, ...] = ()
    type_values = [value for name, value in params if name == "_type"]
    if type_values and resource_type is None:
        types = chain.parse_types(",".join(type_values))
        if len(types) == 1:  # one type: its own parameters apply
            resource_type = types[0]
            known = search_parameters(resource_type)
    for name, value in params:
        if name == "_type" and types:
            continue
        if name.partition(":")[0] in RESULT_PARAMETERS:
            result_params.append((name, value))
            continue
        if name in _SETTINGS:
            if name in settings:
                raise _error(name, f"'{name}' is given more than once")
            settings[name] = value
            continue
        if name in _TRANSPARENT:
            continue
        code = name.partition(":")[0]
        chain_root = code.partition(".")[0]
        shared = len(types) > 1 and chain.shared_parameter(types, chain_root)
        if shared and chain_root not in known:
            if value != "":
                links.append(chain.typed_clause(parse_search, types, name, value, base_url))
            continue
        if code == "_has" or name.startswith("_has:") or ("." in name and chain_root in known):
            if value != "":
                links.append(chain.parse_link(parse_search, resource_type, name, value, base_url))
            continue
        if code in FIELD_OF_PARAMETER:
            clauses.append(_text_clause(name, value))
            continue
        param = known.get(code)
        if param is None:
            if strict:
                detail = "is not applied by this server" if code in _NOT_APPLIED else "is unknown"
                raise _error(name, f"Search parameter '{name}' {detail}")
            ignored.append((name, value))
            continue
        if value == "":
            continue  # an empty parameter is ignored (search.html#errors)
        clauses.append(_clause(resource_type, name, param, value, base_url))

    count = DEFAULT_COUNT
    if "_count" in settings:
        count = min(_int("_count", settings["_count"], 0), MAX_COUNT)
    offset = _int("_offset", settings["_offset"], 0, MAX_OFFSET) if "_offset" in settings else 0
    sorts = _sort_keys(resource_type, known, settings["_sort"]) if settings.get("_sort") else ()
    if any(key.code == "_score" for key in sorts) and not any(
        clause.code in FIELD_OF_PARAMETER for clause in clauses
    ):
        raise _error("_sort", "'_sort=_score' needs a _text or _content parameter")
    total = settings.get("_total", "accurate")
    if total not in TOTAL_MODES:
        raise _error("_total", "'_total' takes none, estimate or accurate")
    result = parse_result_params(result_params) if result_params else ResultParams()
    if result.summary == "count":
        count = 0
    query = SearchQuery(
        resource_type=resource_type,
        links=tuple(links),
        types=types,
        result=result,
        clauses=tuple(clauses),
        count=count,
        offset=offset,
        sorts=sorts,
        total=total,
        ignored=tuple(ignored),
    )
    cursor = settings.get(cursors.PARAMETER)
    if cursor is None:
        return query
    if offset:
        raise _error(cursors.PARAMETER, "'_cursor' and '_offset' cannot be combined")
    return query.after(cursor)
