"""Oracle test: random resources and random searches, answered twice: by the SQLite
index, and by the small evaluator below that walks the resources in memory and applies
the R4 rules (search.html) directly, with its own getters, date ranges, unit table and
comparisons (no code shared with search/ or the SQL path). Both must find the same ids.

Covered: token (code, system|code, |code, system|, :not, :missing), string (default,
:exact, :contains, names with accents, CJK and escaped , $ |; a CJK name also as family
then given written together), reference (and :identifier on Reference.identifier), date
(eq ne gt lt ge le sa eb on dates and Periods, reversed Periods as their hull), number and quantity (all nine prefixes,
value / value||unit / value|UCUM|unit with mass and mass-concentration conversions),
the component-code-value-quantity composite, uri (:below, :above), comma OR,
repeated-parameter AND, `_sort` order (missing values last, ties in storage order;
quantities by their canonical UCUM value where the unit converts), and
`_contained` (false, true, both) with `_containedType` (container, contained) over the
Patients that Observations contain.
Date `ap` depends on the clock and is tested in
test_search_types.py instead.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.errors import FHIRError
from tests.search_index_db import SearchDB

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
GENDER = "http://hl7.org/fhir/administrative-gender"
# unit -> (dimension, factor to the dimension's base): the UCUM definitions of these units
UNITS = {
    "mg": ("mass", Decimal("0.001")),
    "g": ("mass", Decimal("1")),
    "kg": ("mass", Decimal("1000")),
    "mg/dL": ("mass/volume", Decimal("0.01")),
    "g/L": ("mass/volume", Decimal("1")),
}
NAMES = ["Eve", "Évelyne", "eve", "Müller", "Muller", "王", "王小明", "建华", "Ng, Jr", "A$B", "a|b",
         "Zoë"]  # fmt: skip
CODES = ["1", "2", "a,b"]
SYSTEMS = ["urn:a", "urn:b"]
DATES = ["2020", "2020-03", "2020-03-15", "2021-01-01", "2019-12-31", "2020-03-15T10:00:00Z",
         "2020-03-15T23:59:59Z"]  # fmt: skip
NUMBERS = ["0", "1", "5", "5.4", "5.45", "10", "100", "0.5", "0.05", "-2", "1000", "5.40"]
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
URIS = ["http://a.org/fhir/vs/1", "http://a.org/fhir/vs/2", "http://a.org/other", "urn:x:1"]


# ---------------------------------------------------------------- resources


def _coding() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda s, c: {"system": s, "code": c}, st.sampled_from(SYSTEMS),
                     st.sampled_from(CODES))  # fmt: skip


def _quantity() -> st.SearchStrategy[dict[str, Any]]:
    def build(value: str, unit: str, ucum: bool) -> dict[str, Any]:
        if unit == "tablets":
            return {"value": Decimal(value), "unit": unit}
        quantity = {"value": Decimal(value), "unit": unit, "code": unit}
        return {**quantity, "system": UCUM} if ucum else quantity

    return st.builds(build, st.sampled_from(NUMBERS),
                     st.sampled_from([*UNITS, "tablets"]), st.booleans())  # fmt: skip


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _patient(fields: tuple[Any, ...]) -> dict[str, Any]:
    gender, birth, names, identifiers = fields
    patient: dict[str, Any] = {"resourceType": "Patient"}
    if gender:
        patient["gender"] = gender
    if birth:
        patient["birthDate"] = birth[:10]
    if names:
        patient["name"] = [{"family": family, "given": given} for family, given in names]
    if identifiers:
        patient["identifier"] = [{"system": s, "value": v} for s, v in identifiers]
    return patient


PATIENT = st.tuples(
    _optional(st.sampled_from(["male", "female", "other"])),
    _optional(st.sampled_from(DATES)),
    st.lists(st.one_of(
        st.tuples(st.sampled_from(NAMES), st.lists(st.sampled_from(NAMES), max_size=2)),
        st.sampled_from([("王", ["建华"]), ("王", ["小明"])]),  # written together: 王建华
    ), max_size=2),
    st.lists(st.tuples(st.sampled_from(SYSTEMS), st.sampled_from(CODES)), max_size=2),
).map(_patient)  # fmt: skip


def _observation(fields: tuple[Any, ...]) -> dict[str, Any]:
    codings, value, effective, components, subject, identifier, contained = fields
    observation: dict[str, Any] = {"resourceType": "Observation", "status": "final",
                                   "code": {"coding": codings}}  # fmt: skip
    if value is not None:
        observation["valueQuantity"] = value
    if isinstance(effective, str):
        observation["effectiveDateTime"] = effective
    elif isinstance(effective, tuple):
        period = {}
        if effective[0]:
            period["start"] = effective[0]
        if effective[1]:
            period["end"] = effective[1]
        observation["effectivePeriod"] = period
    if components:
        observation["component"] = [
            {"code": {"coding": [coding]}, "valueQuantity": quantity}
            for coding, quantity in components
        ]
    if contained:
        observation["contained"] = [
            {**patient, "id": f"c{n}"} for n, patient in enumerate(contained)
        ]
        subject = "#c0"
    reference: dict[str, Any] = {"reference": subject} if subject else {}
    if identifier:
        reference["identifier"] = {"system": identifier[0], "value": identifier[1]}
    if reference:
        observation["subject"] = reference
    return observation


OBSERVATION = st.tuples(
    st.lists(_coding(), min_size=1, max_size=2),
    _optional(_quantity()),
    # Periods in either order: one whose end is before its start (per-1 broken) is
    # searched as the hull of its ends
    st.one_of(st.none(), st.sampled_from(DATES),
              st.tuples(_optional(st.sampled_from(DATES)), _optional(st.sampled_from(DATES))),
              st.sampled_from([("2021-01-01", "2020-03"), ("2020-03-15", "2019-12-31"),
                               ("2020-03-15T23:59:59Z", "2020-03-15T10:00:00Z")])),
    st.lists(st.tuples(_coding(), _quantity()), max_size=2),
    _optional(st.sampled_from(["Patient/p1", "Patient/p2", "Group/p1"])),
    _optional(st.tuples(st.sampled_from(SYSTEMS), st.sampled_from(CODES))),
    st.lists(PATIENT, max_size=2),
).map(_observation)  # fmt: skip

RISK = st.builds(
    lambda p: {"resourceType": "RiskAssessment", "status": "final",
               **({"prediction": [{"probabilityDecimal": Decimal(p)}]} if p else {})},
    st.sampled_from([*NUMBERS, None]),
)  # fmt: skip
VALUE_SET = st.builds(
    lambda u: {"resourceType": "ValueSet", "status": "active", **({"url": u} if u else {})},
    _optional(st.sampled_from(URIS)),
)

RESOURCES = st.lists(st.one_of(PATIENT, OBSERVATION, RISK, VALUE_SET), min_size=3, max_size=16)

# ---------------------------------------------------------------- the evaluator


def fold(text: str) -> str:
    """Case and accent folding, written out for the test's alphabet."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn").lower()


def date_bounds(text: str) -> tuple[datetime, datetime]:
    """[start, end) of a FHIR date in the test's formats."""
    if len(text) == 4:
        year = int(text)
        return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    if len(text) == 7:
        year, month = int(text[:4]), int(text[5:7])
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        return datetime(year, month, 1, tzinfo=UTC), end
    if len(text) == 10:
        start = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return start, start + timedelta(days=1)
    start = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return start, start + _ONE_SECOND


_ONE_SECOND = timedelta(seconds=1)
_FAR_PAST = datetime(1, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)


def date_matches(prefix: str, value: tuple[datetime, datetime], search: str) -> bool:
    (start, end), (q_start, q_end) = value, date_bounds(search)
    return {
        "eq": q_start <= start and end <= q_end,
        "ne": not (q_start <= start and end <= q_end),
        "gt": end > q_end,
        "lt": start < q_start,
        "ge": end > q_start,
        "le": start < q_end,
        "sa": start >= q_end,
        "eb": end <= q_start,
    }[prefix]


def number_matches(prefix: str, value: Decimal, search: str, factor: Decimal = Decimal(1)) -> bool:
    """search.html#number: eq/ne within half a unit of the last digit given, gt/lt/ge/le
    exactly, sa/eb beyond that range, ap within 10% (or the range, if wider)."""
    target = Decimal(search)
    decimals = len(search.split(".")[1]) if "." in search else 0
    half = Decimal(5) / Decimal(10) ** (decimals + 1)
    low, high = (target - half) * factor, (target + half) * factor
    exact = target * factor
    if prefix == "ap":
        margin = max(half, abs(target) / 10) * factor
        return exact - margin <= value <= exact + margin
    return {
        "eq": low <= value < high,
        "ne": not low <= value < high,
        "gt": value > exact,
        "lt": value < exact,
        "ge": value >= exact,
        "le": value <= exact,
        "sa": value >= high,
        "eb": value < low,
    }[prefix]


@dataclass(frozen=True)
class Param:
    type: str
    get: Any  # resource -> list of values


def _names(resource: dict[str, Any], parts: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for name in resource.get("name", []):
        for part in parts:
            value = name.get(part)
            out += value if isinstance(value, list) else ([value] if value else [])
    return out


def _han(text: str) -> bool:
    return bool(text) and all(unicodedata.name(ch, "").startswith("CJK UNIFIED") for ch in text)


def _full_names(resource: dict[str, Any]) -> list[str]:
    """Every part of every name, and a Chinese name also as it is written: family then
    given, with no space ("王" + "建华" = "王建华")."""
    out = _names(resource, ("family", "given"))
    for name in resource.get("name", []):
        parts = [name["family"], *name["given"]]
        if name["given"] and all(_han(part) for part in parts):
            out.append("".join(parts))
    return out


def _effective(resource: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    if "effectiveDateTime" in resource:
        return [date_bounds(resource["effectiveDateTime"])]
    period = resource.get("effectivePeriod")
    if not period:
        return []
    if "start" in period and "end" in period:
        start, end = date_bounds(period["start"]), date_bounds(period["end"])
        if start[0] >= end[1]:  # reversed: the hull of both
            return [(min(start[0], end[0]), max(start[1], end[1]))]
        return [(start[0], end[1])]
    start = date_bounds(period["start"])[0] if "start" in period else _FAR_PAST
    end = date_bounds(period["end"])[1] if "end" in period else _FAR_FUTURE
    return [(start, end)]


PARAMS: dict[tuple[str, str], Param] = {
    ("Patient", "gender"): Param("token", lambda r: [(GENDER, r["gender"])] if "gender" in r
                                 else []),
    ("Patient", "identifier"): Param("token", lambda r: [(i["system"], i["value"])
                                                         for i in r.get("identifier", [])]),
    ("Patient", "family"): Param("string", lambda r: _names(r, ("family",))),
    ("Patient", "given"): Param("string", lambda r: _names(r, ("given",))),
    ("Patient", "name"): Param("string", _full_names),
    ("Patient", "birthdate"): Param("date", lambda r: [date_bounds(r["birthDate"])]
                                    if "birthDate" in r else []),
    ("Observation", "code"): Param("token", lambda r: [(c["system"], c["code"])
                                                       for c in r["code"]["coding"]]),
    ("Observation", "date"): Param("date", _effective),
    ("Observation", "subject"): Param("reference", lambda r: [r["subject"]["reference"]]
                                      if "reference" in r.get("subject", {}) else []),
    ("Observation", "value-quantity"): Param("quantity", lambda r: [r["valueQuantity"]]
                                             if "valueQuantity" in r else []),
    ("Observation", "component-code-value-quantity"): Param(
        "composite",
        lambda r: [((c["code"]["coding"][0]["system"], c["code"]["coding"][0]["code"]),
                    c["valueQuantity"]) for c in r.get("component", [])],
    ),
    ("RiskAssessment", "probability"): Param(
        "number", lambda r: [p["probabilityDecimal"] for p in r.get("prediction", [])]
    ),
    ("ValueSet", "url"): Param("uri", lambda r: [r["url"]] if "url" in r else []),
}  # fmt: skip


def _reference_identifiers(resource: dict[str, Any], code: str) -> list[tuple[str, str]]:
    """(system, value) of the Reference.identifier under `code` (for :identifier)."""
    identifier = resource.get(code, {}).get("identifier")
    return [(identifier["system"], identifier["value"])] if identifier else []


def _quantities(resource: dict[str, Any]) -> list[dict[str, Any]]:
    found = [resource["valueQuantity"]] if "valueQuantity" in resource else []
    return found + [c["valueQuantity"] for c in resource.get("component", [])]


def unescape(text: str) -> str:
    out, chars = [], iter(text)
    for ch in chars:
        out.append(next(chars, "") if ch == "\\" else ch)
    return "".join(out)


def split(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], "", False
    for ch in text:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            current += ch
            escaped = True
        elif ch == separator:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def token_matches(value: tuple[str, str], search: str) -> bool:
    parts = split(search, "|")
    if len(parts) == 1:
        return value[1] == unescape(parts[0])
    system, code = unescape(parts[0]), unescape(parts[1])
    if not code:
        return value[0] == system
    return value == (system, code)


def quantity_matches(quantity: dict[str, Any], search: str) -> bool:
    parts = split(search, "|")
    prefix, number = (parts[0][:2], parts[0][2:]) if parts[0][:2].isalpha() else ("eq", parts[0])
    value = quantity["value"]
    if len(parts) == 1:
        return number_matches(prefix, value, number)
    system, unit = parts[1], parts[2]
    if system == UCUM and unit in UNITS:
        code = quantity.get("code")
        if quantity.get("system") != UCUM or code not in UNITS:
            return False
        (dimension, factor), (q_dimension, q_factor) = UNITS[code], UNITS[unit]
        return dimension == q_dimension and number_matches(prefix, value * factor, number,
                                                           q_factor)  # fmt: skip
    if system:
        same_unit = quantity.get("system") == system and quantity.get("code") == unit
    else:
        same_unit = unit in (quantity.get("code"), quantity.get("unit"))
    return same_unit and number_matches(prefix, value, number)


def value_matches(param: Param, modifier: str, value: Any, search: str) -> bool:
    if param.type == "token":
        return token_matches(value, search)
    if param.type == "string":
        text = unescape(search)
        if modifier == "exact":
            return bool(value == text)
        if modifier == "contains":
            return fold(text) in fold(value)
        return fold(value).startswith(fold(text)) and len(text) > 0
    if param.type == "reference":
        text = unescape(search)
        return bool(value == text or value.split("/")[-1] == text)
    if param.type == "date":
        prefix, text = (search[:2], search[2:]) if search[:2].isalpha() else ("eq", search)
        return date_matches(prefix, value, text)
    if param.type == "number":
        prefix, text = (search[:2], search[2:]) if search[:2].isalpha() else ("eq", search)
        return number_matches(prefix, value, text)
    if param.type == "quantity":
        return quantity_matches(value, search)
    if param.type == "composite":
        first, second = split(search, "$")
        return token_matches(value[0], first) and quantity_matches(value[1], second)
    text = unescape(search)  # uri
    if modifier == "below":
        return bool(value.startswith(text))
    if modifier == "above":
        return bool(text == value or text.startswith(value + "/"))
    return bool(value == text)


def sort_key(param: Param, value: Any, descending: bool) -> Any:
    """What a resource sorts by for one of its values (search.html#sort: the lowest value
    ascending, the highest descending; a date by its start, or its end descending)."""
    if param.type == "string":
        return fold(value)
    if param.type == "token":
        return value[1]
    if param.type == "date":
        return value[1] if descending else value[0]
    if param.type == "quantity":
        # canonical where UCUM converts: kilograms, and kg/m3 (= g/L) for concentrations
        code = value.get("code")
        if value.get("system") == UCUM and code in UNITS:
            dimension, factor = UNITS[code]
            return value["value"] * factor / (1000 if dimension == "mass" else 1)
        return value["value"]
    return value


def sort_keys(units_found: list[tuple[str, dict[str, Any]]], resource_type: str, sort: str
              ) -> dict[str, Any]:  # fmt: skip
    """Per answer, its sort key (None: no value): the lowest of its values ascending, the
    highest descending, over every matching resource it stands for (a container stands
    for the contained resources that match)."""
    descending = sort.startswith("-")
    param = PARAMS[(resource_type, sort.lstrip("-"))]
    keys: dict[str, list[Any]] = {}
    for answer, resource in units_found:
        keys.setdefault(answer, []).extend(
            sort_key(param, v, descending) for v in param.get(resource)
        )
    return {
        answer: (max(values) if descending else min(values)) if values else None
        for answer, values in keys.items()
    }


def ordered(resources: list[dict[str, Any]], found: set[str], resource_type: str,
            sort: str) -> list[str]:  # fmt: skip
    """The found ids in _sort order: resources without a value last, ties in the order
    the resources were stored."""
    descending = sort.startswith("-")
    matching = [(r["id"], r) for r in resources if r.get("id") in found]
    keys = sort_keys(matching, resource_type, sort)
    keyed = [(keys[answer], answer) for answer, _ in matching if keys[answer] is not None]
    missing = [answer for answer, _ in matching if keys[answer] is None]
    keyed.sort(key=lambda pair: pair[0], reverse=descending)  # stable: ties keep order
    return [rid for _, rid in keyed] + missing


def in_sort_order(found: list[str], keys: dict[str, Any], sort: str) -> bool:
    """Whether `found` is in _sort order by `keys` (missing last); ties in any order."""
    descending = sort.startswith("-")
    values = [keys[answer] for answer in found]
    present = [v for v in values if v is not None]
    if values[: len(present)] != present:
        return False
    return present == sorted(present, reverse=descending)


_RESULT = frozenset({"_sort", "_contained", "_containedType"})


def units(resources: list[dict[str, Any]], params: list[tuple[str, str]]
          ) -> list[tuple[str, dict[str, Any]]]:  # fmt: skip
    """What a search looks at, as (the id it answers with, resource): the stored
    resources (_contained false or both) and the resources they contain (true or both),
    answered as their container's id, or as "container#local id" with
    _containedType=contained."""
    mode = dict(params).get("_contained", "false")
    answer_contained = dict(params).get("_containedType") == "contained"
    found = []
    for resource in resources:
        if mode != "true":
            found.append((resource["id"], resource))
        if mode != "false":
            for item in resource.get("contained", []):
                name = f"{resource['id']}#{item['id']}" if answer_contained else resource["id"]
                found.append((name, item))
    return found


def oracle(resources: list[dict[str, Any]], resource_type: str,
           params: list[tuple[str, str]]) -> set[str]:  # fmt: skip
    found = set()
    for answer, resource in units(resources, params):
        if resource["resourceType"] != resource_type:
            continue
        ok = True
        for name, text in params:
            if name in _RESULT:
                continue
            code, _, modifier = name.partition(":")
            param = PARAMS[(resource_type, code)]
            values = param.get(resource)
            if modifier == "identifier":  # a token on Reference.identifier
                param, values = Param("token", None), _reference_identifiers(resource, code)
            if modifier == "missing":
                ok = ok and (not values) == (text == "true")
                continue
            alternatives = split(text, ",")
            hit = any(value_matches(param, modifier, v, s) for v in values for s in alternatives)
            ok = ok and (not hit if modifier == "not" else hit)
        if ok:
            found.add(answer)
    return found


# ---------------------------------------------------------------- the searches


def escape(text: str) -> str:
    return "".join("\\" + ch if ch in ",|$\\" else ch for ch in text)


def _token_value(resource_type: str, code: str) -> st.SearchStrategy[str]:
    if code == "gender":
        return st.sampled_from(["male", "female", f"{GENDER}|male", f"{GENDER}|", "|male"])
    return st.one_of(
        st.sampled_from(CODES).map(escape),
        st.tuples(st.sampled_from(SYSTEMS), st.sampled_from(CODES)).map(
            lambda t: f"{t[0]}|{escape(t[1])}"
        ),
        st.sampled_from(SYSTEMS).map(lambda s: f"{s}|"),
        st.sampled_from(CODES).map(lambda c: f"|{escape(c)}"),
    )


def _quantity_value(numbers: list[str]) -> st.SearchStrategy[str]:
    number = st.tuples(st.sampled_from(PREFIXES), st.sampled_from(numbers)).map("".join)
    return st.one_of(
        number,
        st.tuples(number, st.sampled_from([*UNITS, "tablets"])).map(lambda t: f"{t[0]}||{t[1]}"),
        # "tablets" is no UCUM code: with the UCUM system it is a 400 (test_search_query)
        st.tuples(number, st.sampled_from(list(UNITS))).map(lambda t: f"{t[0]}|{UCUM}|{t[1]}"),
    )


def _value(
    resource_type: str,
    code: str,
    param: Param,
    modifier: str,
    numbers: list[str],
    names: list[str],
) -> st.SearchStrategy[str]:
    if modifier == "missing":
        return st.sampled_from(["true", "false"])
    kind = param.type
    if kind == "token":
        return _token_value(resource_type, code)
    if kind == "string":
        return st.one_of(
            st.sampled_from(names).map(escape),
            st.sampled_from(["ev", "EVE", "mü", "王小", "王建", "王建华", "建华王", "ng\\, j",
                             "a\\$", "a\\|b"]),
        )
    if kind == "reference" and modifier == "identifier":
        return _token_value(resource_type, "identifier")
    if kind == "reference":
        return st.sampled_from(["Patient/p1", "p1", "p2", "Group/p1"])
    if kind == "date":
        return st.tuples(st.sampled_from(PREFIXES[:-1]), st.sampled_from(DATES)).map("".join)
    if kind == "number":
        return st.tuples(st.sampled_from(PREFIXES), st.sampled_from(numbers)).map("".join)
    if kind == "quantity":
        return _quantity_value(numbers)
    if kind == "composite":
        return st.tuples(_token_value(resource_type, "code"), _quantity_value(numbers)).map(
            lambda t: f"{t[0]}${t[1]}"
        )
    return st.sampled_from([*URIS, "http://a.org/fhir", "http://a.org/fhir/vs/1/x"])


_MODIFIERS = {"token": ["", "not", "missing"], "string": ["", "exact", "contains", "missing"],
              "reference": ["", "missing", "identifier"], "date": ["", "missing"],
              "number": ["", "missing"],
              "quantity": ["", "missing"], "composite": ["", "missing"],
              "uri": ["", "below", "above", "missing"]}  # fmt: skip


@st.composite
def searches(
    draw: st.DrawFn, types: list[str], numbers: list[str], names: list[str]
) -> tuple[str, list[tuple[str, str]]]:
    """1 or 2 ANDed parameters of one type, each with 1 or 2 ORed values; numbers are
    drawn mostly from those in the resources, so that the edges (ge on an equal value,
    eq at the end of a range) are hit."""
    resource_type = draw(st.sampled_from(types))
    codes = [code for (rtype, code) in PARAMS if rtype == resource_type]
    params = []
    for _ in range(draw(st.integers(1, 2))):
        code = draw(st.sampled_from(codes))
        param = PARAMS[(resource_type, code)]
        modifier = draw(st.sampled_from(_MODIFIERS[param.type]))
        if modifier == "missing":
            value = draw(_value(resource_type, code, param, modifier, numbers, names))
        else:
            values = draw(st.lists(_value(resource_type, code, param, modifier, numbers, names),
                                   min_size=1, max_size=2))  # fmt: skip
            value = ",".join(values)
        params.append((f"{code}:{modifier}" if modifier else code, value))
    sortable = [code for code in codes if PARAMS[(resource_type, code)].type in SORTABLE]
    if draw(st.booleans()):
        params.append(("_sort", draw(st.sampled_from(["", "-"])) + draw(st.sampled_from(sortable))))
    if resource_type == "Patient" and draw(st.booleans()):  # Observations contain Patients
        params.append(("_contained", draw(st.sampled_from(["false", "true", "both"]))))
        if draw(st.booleans()):
            params.append(("_containedType", draw(st.sampled_from(["container", "contained"]))))
    return resource_type, params


SORTABLE = frozenset({"token", "string", "date", "number", "quantity", "uri"})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources=RESOURCES, data=st.data())
def test_sqlite_search_equals_the_oracle(resources: list[dict[str, Any]], data: Any) -> None:
    types = sorted({resource["resourceType"] for resource in resources}
                   | ({"Patient"} if any("contained" in r for r in resources) else set()))
    numbers = sorted({str(q["value"]) for r in resources for q in _quantities(r)}
                     | {str(p["probabilityDecimal"]) for r in resources
                        for p in r.get("prediction", [])}) or NUMBERS  # fmt: skip
    numbers = [*numbers, "5.40", "0.50", "100", "5"]
    names = sorted({n for r in resources for n in _full_names(r)}) or NAMES
    queries = data.draw(st.lists(searches(types, numbers, names), min_size=2, max_size=8),
                        label="queries")  # fmt: skip
    db = SearchDB(Path(":memory:"))
    try:
        for number, resource in enumerate(resources):
            resource["id"] = f"p{number}"
            db.add(resource)
        for resource_type, params in queries:
            try:
                found = db.search(resource_type, params)
            except FHIRError as error:  # pragma: no cover - a failure explains itself
                raise AssertionError(f"{params} gave {error.outcome()}") from None
            expected = oracle(resources, resource_type, params)
            assert set(found) == expected, (resource_type, params)
            assert len(found) == len(expected), params  # a container comes once
            sort = dict(params).get("_sort")
            if sort and dict(params).get("_contained", "false") == "false":
                assert found == ordered(resources, expected, resource_type, sort), params
            elif sort:  # ties among contained resources: in rid order, which the test
                # does not model; the order of the keys must hold
                matching = [(a, r) for a, r in units(resources, params)
                            if a in expected and r["resourceType"] == resource_type
                            and oracle([{**r, "id": a}], resource_type,
                                       [(n, v) for n, v in params if n not in _RESULT])]
                keys = sort_keys(matching, resource_type, sort)
                assert in_sort_order(found, keys, sort), (params, found, keys)
    finally:
        db.conn.close()
