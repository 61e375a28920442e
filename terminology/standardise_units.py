"""Quantities in one canonical UCUM unit per kind of quantity, so that a glucose sent in
mg/dL by one hospital and in g/L by another carry the same canonical value.

The conversion factors are search.units' (ucumvert's UCUM table reduced to SI base units
by pint), so the canonical value added to a resource and the value the quantity search
index compares always agree. Each kind of quantity (its SI base-unit dimension) has the
unit a laboratory would report it in: mass concentration in g/L, substance concentration
in mmol/L (molar stays molar: a mass and a substance concentration are different kinds),
catalytic concentration in U/L, and so on; a kind without a preferred unit is written in
UCUM's own base units ("kg.m-2").
"""

from __future__ import annotations

import re
from decimal import Context, Decimal
from functools import lru_cache

from search.units import _registry, canonical_unit

# search.units' dimension text -> the canonical UCUM unit for that kind of quantity
PREFERRED = {
    "kilogram.meter-3": "g/L",  # mass concentration
    "meter-3.mole": "mmol/L",  # substance concentration
    "meter-3.mole.second-1": "U/L",  # catalytic concentration (U = umol/min)
    "meter-3": "10*9/L",  # number concentration (cell counts)
    "meter3": "L",
    "meter3.second-1": "mL/min",
    "kilogram": "kg",
    "meter": "cm",
    "second": "s",
    "second-1": "/min",
    "kelvin": "Cel",
    "kilogram.meter-1.second-2": "mm[Hg]",
    "kilogram.meter-2": "kg/m2",
    "kilogram-1.mole": "mmol/kg",
    "1": "%",
}
_BASE = {"kilogram": "kg", "meter": "m", "second": "s", "mole": "mol", "kelvin": "K",
         "ampere": "A", "candela": "cd"}
_ANNOTATION = re.compile(r"\{[^{}]*\}")


@lru_cache(maxsize=4096)
def ucum_problem(code: str) -> str | None:
    """Why `code` is not a UCUM unit (case-sensitive, as UCUM is), or None when it is.
    Annotations ({cells}, {1.73_m2}) count as UCUM's unit 1."""
    if not code or len(code) > 64 or code != code.strip() or " " in code:
        return f"unit {code[:64]!r} is not a UCUM unit (empty, too long or with spaces)"
    if canonical_unit(code) is not None:
        return None
    bare = _ANNOTATION.sub("", code)
    if not bare or bare in {"/", "."}:
        return None
    bare = "1" + bare if bare[0] in "/." else bare
    try:
        _registry().from_ucum(bare)
    except Exception:  # noqa: BLE001 - ucumvert raises several kinds for a bad unit
        return f"unit {code!r} is not a UCUM unit"
    return None


@lru_cache(maxsize=4096)
def _conversion(code: str) -> tuple[str, Decimal, Decimal] | None:
    """(canonical UCUM unit, factor, offset) with canonical = value * factor + offset."""
    found = canonical_unit(code)
    if found is None:
        return None
    dimension, factor, offset = found
    preferred = PREFERRED.get(dimension)
    if preferred is not None:
        target = canonical_unit(preferred)
        if target is None or target[0] != dimension:  # a wrong table entry: no canonical
            return None
        _, target_factor, target_offset = target
        ratio = Context(prec=12).divide(factor, target_factor)
        shift = Context(prec=12).divide(offset - target_offset, target_factor)
        return preferred, ratio, shift
    unit = _base_ucum(dimension)
    return (unit, factor, offset) if unit else None


def _base_ucum(dimension: str) -> str | None:
    """"kilogram.meter-2" -> "kg.m-2"; None if a base unit has no UCUM symbol here."""
    parts = []
    for part in dimension.split("."):
        name = part.rstrip("-0123456789.")
        exponent = part[len(name):]
        symbol = _BASE.get(name)
        if symbol is None:
            return None
        parts.append(symbol + exponent)
    return ".".join(parts)


# the precision of the decimal context the conversion is computed in (Python's default)
_EXACT_DIGITS = 28


def canonical_quantity(value: Decimal, code: str) -> tuple[Decimal, str] | None:
    """`value` `code` in the canonical unit of its kind, with as many significant digits
    as `value` has (100 mg/dL -> 1.00 g/L); None when the unit is not convertible
    (not UCUM, or an arbitrary unit such as [IU]/L)."""
    found = _conversion(code)
    if found is None:
        return None
    unit, factor, offset = found
    if unit == code:
        return value, unit
    digits = max(len(value.as_tuple().digits), 1)
    if digits > _EXACT_DIGITS:
        return None  # more digits than the conversion keeps: no canonical value is exact
    context = Context(prec=max(digits, 3) if offset else digits)
    try:
        raw = value * factor + offset
        result = context.create_decimal(raw)
        shape = result.as_tuple()
        whole = len(shape.digits) + int(shape.exponent)
        if int(shape.exponent) > 0 and whole <= _EXACT_DIGITS:  # 1E+2 -> 100
            result = result.quantize(Decimal(1), context=Context(prec=whole))
    except ArithmeticError:  # decimal.InvalidOperation/Overflow (1E+999999999 mg/dL)
        return None
    return result, unit
