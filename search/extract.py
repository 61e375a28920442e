"""Index rows of a resource: the values of its search parameters, ready for SQL.

Each search parameter's FHIRPath expression selects elements (search.paths); the
converter for the parameter's type turns them into rows (R4 search.html, per type):

- token: (system, code) from Coding, CodeableConcept (each coding), Identifier
  (system|value), ContactPoint (system|value), and code/boolean/string/uri primitives
  (no system, except codes whose binding implies one: SearchParamDef.system).
  CodeableConcept.text and Coding.display also go into string rows under "<key>:text",
  for the :text modifier; an Identifier's type goes into token rows under
  "<key>:of-type" as (type system, "<type code>|<value>"), for :of-type.
- string: normalised text (search.values.normalize_text) with the exact original;
  HumanName gives family, given, prefix, suffix and text, and, when family and given
  are all in scripts written without spaces (Han, kana, Hangul), the full name as it
  is written there: family then given ("王" + "建华" -> "王建华"), so that `name=王建华`
  finds a name that has no `text`; Address each of its parts.
- reference: (target type, target id) from Reference.reference, canonical and uri. A
  local reference "#x" to a resource in the resource's own `contained` gives
  (that resource's type, "#x"), so chains can follow it into the contained resource
  (search.html#contained); one to nothing contained gives no row. Reference.identifier
  gives a token row (system, value) under "<key>:identifier", for the :identifier
  modifier (search.html#modifiers).
- date: [low, high] microsecond ranges from date, dateTime, instant, Period, Timing. A
  Period whose end is before its start (it breaks invariant per-1) is indexed as the
  hull of its two ends, so every search sees it as one well-formed range.

- number: [low, high] from decimal and integer values (both the value), Range (its ends).
- quantity: (system, code, value) from Quantity (code, else unit); a unit display other
  than the code also gives a row without system, for `value||unit`. A Range (the
  context-quantity parameters) gives (system, code, low, high) rows in
  `quantity_ranges`, compared like a number Range. A UCUM quantity
  whose unit converts (search.units) also gives a row under "<key>:canonical" with the
  canonical unit as code and the canonical value.
- uri: the uri, as a token row without system.
- composite: one row per element the composite selects and combination of its
  components' values (search.composites): the first component's system and code (a
  token; for a reference, its target type and id), the second's code/system (token,
  quantity unit, normalised string) and low/high (quantity value, date range); for
  token$number$number, v_low holds the first number and v_high the second.

_id and _lastUpdated are not extracted: they are columns of the resources table.
Composite parameters without known components (search.composites) are not indexed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import math
from decimal import Decimal
from functools import cache
from typing import Any

from conformance.definitions import COMMON_PARAMETERS, RESOURCE_TYPES, search_parameters
from search.composites import RESOURCE_PREFIX, Component, components
from search.fulltext import is_split_char
from search.paths import Getter, compile_path, slow_getter, split_union
from search.units import UCUM, to_canonical
from search.values import (
    DATE_MAX,
    DATE_MIN,
    MAX_STRING,
    NUMBER_MAX,
    date_range,
    normalize_text,
    split_reference,
)

INDEXED_TYPES = frozenset(
    {"token", "string", "reference", "date", "number", "quantity", "uri", "composite"}
)
COLUMN_PARAMETERS = frozenset({"_id", "_lastUpdated"})  # served by the resources table
_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def index_key(resource_type: str, code: str) -> str:
    """The `param` column value: "Observation.code"; Resource-level parameters (_tag,
    _security, ...) are shared by all types and keyed by their code alone, so a search
    across all types can use them."""
    return code if code in COMMON_PARAMETERS else f"{resource_type}.{code}"


@dataclass
class IndexRows:
    """The rows of one resource for each index table (without the rid)."""

    tokens: set[tuple[str, str, str]] = field(default_factory=set)  # param, system, code
    strings: set[tuple[str, str, str]] = field(default_factory=set)  # param, normalised, exact
    references: set[tuple[str, str, str]] = field(default_factory=set)  # param, type, id
    dates: set[tuple[str, int, int]] = field(default_factory=set)  # param, low, high
    numbers: set[tuple[str, float, float]] = field(default_factory=set)  # param, low, high
    # param, system, code, value
    quantities: set[tuple[str, str, str, float]] = field(default_factory=set)
    # param, system, code, low, high: a Range searched as a quantity (open ends at
    # -/+NUMBER_MAX)
    quantity_ranges: set[tuple[str, str, str, float, float]] = field(default_factory=set)
    # param, system, code, v_system, v_code, v_low, v_high (see the module docstring)
    composites: set[tuple[str, str, str, str, str, Any, Any]] = field(default_factory=set)


Converter = Callable[[IndexRows, str, Any], None]


def _add_string(rows: IndexRows, key: str, text: Any) -> None:
    if type(text) is str and text:
        text = text[:MAX_STRING]
        rows.strings.add((key, normalize_text(text), text))


def _system(value: dict[str, Any]) -> str:
    system = value.get("system")
    return system if type(system) is str else ""


def _identifier_of_type(
    rows: IndexRows, key: str, identifier_type: dict[str, Any], value: str
) -> None:
    """Rows for :of-type (search.html#modifiers, R4 `identifier:of-type=system|code|value`):
    system = the type coding's system, code = "<type code>|<identifier value>"."""
    for coding in identifier_type.get("coding", ()):
        if type(coding) is dict and type(coding.get("code")) is str:
            rows.tokens.add((key + ":of-type", _system(coding), f"{coding['code']}|{value}"))


def _token(rows: IndexRows, key: str, value: Any) -> None:
    kind = type(value)
    if kind is str:
        rows.tokens.add((key, "", value))
    elif kind is bool:
        rows.tokens.add((key, "", "true" if value else "false"))
    elif kind is int:
        rows.tokens.add((key, "", str(value)))
    elif kind is dict:
        if "coding" in value or ("text" in value and "value" not in value):
            # CodeableConcept
            for coding in value.get("coding", ()):
                _token(rows, key, coding)
            _add_string(rows, key + ":text", value.get("text"))
        elif "value" in value:
            # Identifier or ContactPoint: system|value
            code = value["value"]
            if type(code) is str:
                rows.tokens.add((key, _system(value), code))
                identifier_type = value.get("type")
                if type(identifier_type) is dict:
                    _identifier_of_type(rows, key, identifier_type, code)
        else:
            # Coding
            code = value.get("code")
            if type(code) is str:
                rows.tokens.add((key, _system(value), code))
            _add_string(rows, key + ":text", value.get("display"))


def _implied_system_token(system: str) -> Converter:
    """The token converter for a parameter on `code` elements: the codes carry the
    system of their required binding, so `gender=http://hl7.org/fhir/administrative-gender|male`
    finds them (and `gender=|male`, "no system", does not)."""

    def convert(rows: IndexRows, key: str, value: Any) -> None:
        if type(value) is str:
            rows.tokens.add((key, system, value))
        else:
            _token(rows, key, value)

    return convert


def _written_without_spaces(text: Any) -> bool:
    return type(text) is str and text != "" and all(is_split_char(ch) for ch in text)


def _unspaced_full_name(name: dict[str, Any]) -> str | None:
    """Family then given names written together ("王建华"), when every one of them is in
    a script written without spaces (Chinese, Japanese, Korean): how such a name is
    written and searched, whereas family and given are separate elements."""
    family, given = name.get("family"), name.get("given")
    if type(given) is not list or not given or not _written_without_spaces(family):
        return None
    if not all(_written_without_spaces(part) for part in given):
        return None
    return family + "".join(given)


def _string(rows: IndexRows, key: str, value: Any) -> None:
    if type(value) is str:
        _add_string(rows, key, value)
    elif type(value) is dict:
        is_name = "family" in value or "given" in value
        for part in _NAME_PARTS if is_name else _ADDRESS_PARTS:
            item = value.get(part)
            if type(item) is list:
                for text in item:
                    _add_string(rows, key, text)
            else:
                _add_string(rows, key, item)
        if is_name:
            _add_string(rows, key, _unspaced_full_name(value))


# Key suffix of the token rows of Reference.identifier (the :identifier modifier).
IDENTIFIER = ":identifier"

# The target type of a local reference ("#x") until resolve_local_references finds
# the contained resource it names; no resource type starts with "#".
LOCAL = "#"


def _reference_identifier(rows: IndexRows, key: str, identifier: Any) -> None:
    """Reference.identifier as a token row under "<key>:identifier" (R4
    search.html#modifiers: `subject:identifier=system|value`)."""
    if type(identifier) is dict and type(identifier.get("value")) is str:
        rows.tokens.add((key + IDENTIFIER, _system(identifier), identifier["value"]))


def _reference(rows: IndexRows, key: str, value: Any) -> None:
    if type(value) is dict:
        if "identifier" in value:
            _reference_identifier(rows, key, value["identifier"])
        value = value.get("reference")
    if type(value) is str:
        if value.startswith("#"):
            if len(value) > 1:
                rows.references.add((key, LOCAL, value))
            return
        target = split_reference(value)
        if target is not None:
            rows.references.add((key, target[0], target[1]))
            if "|" in value:  # canonical with a version: also findable without it
                bare = split_reference(value.split("|", 1)[0])
                if bare is not None:
                    rows.references.add((key, bare[0], bare[1]))


def _date(rows: IndexRows, key: str, value: Any) -> None:
    if type(value) is str:
        found = date_range(value)
        if found is not None:
            rows.dates.add((key, found[0], found[1]))
    elif type(value) is dict:
        if "start" in value or "end" in value:
            # Period: a missing end means ongoing (R4 datatypes.html#Period)
            start = date_range(value["start"]) if type(value.get("start")) is str else None
            end = date_range(value["end"]) if type(value.get("end")) is str else None
            if start is not None and end is not None and start[0] > end[1]:
                # reversed (per-1 broken): the hull of both ends, so that low <= high
                rows.dates.add((key, min(start[0], end[0]), max(start[1], end[1])))
            elif start is not None or end is not None:
                low = start[0] if start else DATE_MIN
                high = end[1] if end else DATE_MAX
                rows.dates.add((key, low, high))
        else:
            # Timing: its events and the bounds of its repeat
            for event in value.get("event", ()):
                _date(rows, key, event)
            repeat = value.get("repeat")
            if type(repeat) is dict and type(repeat.get("boundsPeriod")) is dict:
                _date(rows, key, repeat["boundsPeriod"])


def _decimal(value: Any) -> Decimal | None:
    kind = type(value)
    if kind is Decimal:
        return value if value.is_finite() else None
    if kind is int:
        return Decimal(value)
    if kind is float and math.isfinite(value):
        # resources built in Python rather than parsed by jsonutil; repr is the
        # shortest text that reads back as the same float (62.7, not 62.70000000000000284)
        return Decimal(repr(value))
    return None


def _number(rows: IndexRows, key: str, value: Any) -> None:
    number = _decimal(value)
    if number is not None:
        rows.numbers.add((key, float(number), float(number)))
    elif type(value) is dict and ("low" in value or "high" in value):  # Range
        low = _decimal(value["low"].get("value")) if type(value.get("low")) is dict else None
        high = _decimal(value["high"].get("value")) if type(value.get("high")) is dict else None
        if low is not None or high is not None:
            rows.numbers.add((
                key,
                float(low) if low is not None else -NUMBER_MAX,
                float(high) if high is not None else NUMBER_MAX,
            ))


def _quantity_range(rows: IndexRows, key: str, value: dict[str, Any]) -> None:
    """A Range (low and/or high SimpleQuantity) under a quantity parameter: one row per
    unit spelling its ends share, and a canonical one when UCUM converts both."""
    ends = [value.get("low"), value.get("high")]
    ends = [end if type(end) is dict else None for end in ends]
    numbers = [_decimal(end.get("value")) if end is not None else None for end in ends]
    if numbers == [None, None]:
        return
    present = [end for end, number in zip(ends, numbers, strict=True) if number is not None]
    system = _system(present[0])
    code = present[0].get("code") if type(present[0].get("code")) is str else ""
    unit = present[0].get("unit") if type(present[0].get("unit")) is str else ""
    if any(_system(end) != system or end.get("code", "") != (code or end.get("code", ""))
           for end in present):  # fmt: skip
        return  # ends in different units: no one unit to search them by
    low = float(numbers[0]) if numbers[0] is not None else -NUMBER_MAX
    high = float(numbers[1]) if numbers[1] is not None else NUMBER_MAX
    rows.quantity_ranges.add((key, system, code or unit, low, high))
    if unit and code and unit != code:
        rows.quantity_ranges.add((key, "", unit, low, high))
    if system == UCUM and code:
        converted = [to_canonical(n, code) if n is not None else None for n in numbers]
        if all(c is not None for c, n in zip(converted, numbers, strict=True) if n is not None):
            unit_name = next(c[0] for c in converted if c is not None)
            rows.quantity_ranges.add((
                key + ":canonical", "", unit_name,
                float(converted[0][1]) if converted[0] is not None else -NUMBER_MAX,
                float(converted[1][1]) if converted[1] is not None else NUMBER_MAX,
            ))  # fmt: skip


def _quantity(rows: IndexRows, key: str, value: Any) -> None:
    if type(value) is not dict:
        return
    if "value" not in value and ("low" in value or "high" in value):
        _quantity_range(rows, key, value)
        return
    number = _decimal(value.get("value"))
    if number is None:
        return
    system = _system(value)
    code = value.get("code") if type(value.get("code")) is str else ""
    unit = value.get("unit") if type(value.get("unit")) is str else ""
    rows.quantities.add((key, system, code or unit, float(number)))
    if unit and code and unit != code:
        rows.quantities.add((key, "", unit, float(number)))
    if system == UCUM and code:
        canonical = to_canonical(number, code)
        if canonical is not None:
            rows.quantities.add((key + ":canonical", "", canonical[0], float(canonical[1])))


def _uri(rows: IndexRows, key: str, value: Any) -> None:
    if type(value) is str and value:
        rows.tokens.add((key, "", value))


_CONVERTERS: dict[str, Converter] = {
    "token": _token,
    "string": _string,
    "reference": _reference,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
    "uri": _uri,
}

# A composite's second component as (key suffix, v_system, v_code, v_low, v_high) tuples.
ComponentValues = list[tuple[str, str, str, Any, Any]]


def _component_values(component: Component, values: list[Any]) -> ComponentValues:
    rows = IndexRows()
    for value in values:
        _CONVERTERS[component.type](rows, "", value)
    out: ComponentValues = []
    if component.type == "token":
        out.extend(("", system, code, 0, 0) for key, system, code in rows.tokens if key == "")
    elif component.type == "quantity":
        out.extend((key, system, code, v, v) for key, system, code, v in rows.quantities)
        out.extend(rows.quantity_ranges)  # (key, system, code, low, high), as v_low/v_high
    elif component.type == "string":
        out.extend(("", "", text, 0, 0) for key, text, _ in rows.strings if key == "")
    elif component.type == "date":
        out.extend(("", "", "", low, high) for _, low, high in rows.dates)
    return out


def _component_getter(
    expression: str, resource_type: str
) -> Callable[[Any, Any], list[Any]]:
    """A getter of one component on (resource, element): relative to the element, or to
    the resource for `%resource.` expressions."""
    if expression.startswith(RESOURCE_PREFIX):
        on_resource = compile_path(expression[len(RESOURCE_PREFIX) :], resource_type)[0]
        return lambda resource, element: on_resource(resource)
    on_element = compile_path(expression, resource_type)[0]
    return lambda resource, element: on_element(element)


def _first_pairs(component: Component, values: list[Any]) -> list[tuple[str, str]]:
    """(system, code) of a composite's first component: a token's, or a reference's
    (target type, target id)."""
    found = IndexRows()
    for value in values:
        (_reference if component.type == "reference" else _token)(found, "", value)
    if component.type == "reference":
        return [(rtype, target) for _, rtype, target in found.references if rtype != LOCAL]
    return [(system, code) for k, system, code in found.tokens if k == ""]


def _composite_converter(parts: tuple[Component, ...], resource_type: str) -> Converter:
    """Rows for one composite parameter: its expression selects the elements (the
    getter of the plan gives (resource, element) pairs), and its components are read
    from each element."""
    getters = [_component_getter(c.expression, resource_type) for c in parts]

    def convert(rows: IndexRows, key: str, pair: Any) -> None:
        resource, element = pair
        if type(element) is not dict:
            return
        pairs = _first_pairs(parts[0], getters[0](resource, element))
        if not pairs:
            return
        if len(parts) == 3:  # token$number$number: both numbers in one row
            starts = [n for n in map(_decimal, getters[1](resource, element)) if n is not None]
            ends = [n for n in map(_decimal, getters[2](resource, element)) if n is not None]
            for system, code in pairs:
                for start in starts:
                    for end in ends:
                        rows.composites.add((key, system, code, "", "", float(start), float(end)))
            return
        second = _component_values(parts[1], getters[1](resource, element))
        for suffix, v_system, v_code, low, high in second:
            for system, code in pairs:
                rows.composites.add((key + suffix, system, code, v_system, v_code, low, high))

    return convert


def _element_getter(expression: str, resource_type: str) -> Getter:
    """The getter of a composite's own expression, which may name the resource itself
    ("Observation" or "Observation | Observation.component"): (resource, element) pairs,
    so that a component can read the resource (`%resource.`)."""
    getters: list[Getter | None] = [
        None if part == resource_type else compile_path(part, resource_type)[0]
        for part in split_union(expression)
    ]

    def getter(resource: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for part in getters:
            elements = [resource] if part is None else part(resource)
            out.extend((resource, element) for element in elements)
        return out

    return getter

Plan = tuple[tuple[str, Getter, Converter], ...]


def _plan(resource_type: str, fast: bool) -> Plan:
    steps = []
    for code, param in search_parameters(resource_type).items():
        if param.type not in INDEXED_TYPES or code in COLUMN_PARAMETERS:
            continue
        if param.type == "composite":
            parts = components(resource_type, code)
            if parts is not None:
                steps.append((
                    index_key(resource_type, code),
                    _element_getter(param.expression, resource_type),
                    _composite_converter(parts, resource_type),
                ))
            continue
        getter = (
            compile_path(param.expression, resource_type)[0]
            if fast
            else slow_getter(param.expression, resource_type)
        )
        convert = _CONVERTERS[param.type]
        if param.type == "token" and param.system is not None:
            convert = _implied_system_token(param.system)
        steps.append((index_key(resource_type, code), getter, convert))
    return tuple(steps)


@cache
def _fast_plan(resource_type: str) -> Plan:
    return _plan(resource_type, fast=True)


@cache
def _slow_plan(resource_type: str) -> Plan:
    return _plan(resource_type, fast=False)


def resolve_local_references(rows: IndexRows, resource: dict[str, Any]) -> None:
    """Give the local references ("#x") among `rows` the type of the resource with id x
    in `resource.contained`; drop those that name nothing contained."""
    local = [row for row in rows.references if row[1] == LOCAL]
    if not local:
        return
    types: dict[str, str] = {}
    contained = resource.get("contained")
    for item in contained if type(contained) is list else ():
        if type(item) is dict and type(item.get("id")) is str:
            rtype = item.get("resourceType")
            if type(rtype) is str and rtype in RESOURCE_TYPES:
                types["#" + item["id"]] = rtype
    for row in local:
        rows.references.discard(row)
        key, _, target = row
        if target in types:
            rows.references.add((key, types[target], target))


def _run(plan: Plan, resource: dict[str, Any]) -> IndexRows:
    rows = IndexRows()
    for key, getter, convert in plan:
        for value in getter(resource):
            convert(rows, key, value)
    resolve_local_references(rows, resource)
    return rows


def extract(resource: dict[str, Any]) -> IndexRows:
    """The index rows of `resource` for every indexed search parameter of its type.
    A resource of an unknown type gives no rows."""
    resource_type = resource.get("resourceType")
    if resource_type not in RESOURCE_TYPES:
        return IndexRows()
    return _run(_fast_plan(resource_type), resource)


def extract_with_fhirpathpy(resource: dict[str, Any]) -> IndexRows:
    """Like `extract`, but every expression evaluated by fhirpathpy: the reference the
    fast path is tested against, and the baseline of benchmarks/bench_extract.py."""
    resource_type = resource.get("resourceType")
    if resource_type not in RESOURCE_TYPES:
        return IndexRows()
    return _run(_slow_plan(resource_type), resource)
