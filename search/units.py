"""UCUM units in canonical form, so commensurable quantities compare (R4 search.html#quantity:
a search for 1 g/L finds a value stored as 100 mg/dL).

The UCUM grammar and unit table come from `ucumvert`, which maps UCUM codes onto `pint`
units; pint reduces them to SI base units. Only the conversion factor is taken from pint,
as a float rounded to 12 significant digits (pint's factors are products of exact
decimal definitions, so the rounding removes only binary noise); the value itself is
multiplied as a Decimal and keeps its precision.

Arbitrary units ([IU], [arb'U], ...) are not commensurable with anything, not even with
each other (UCUM 4.5.2 / the `isArbitrary` flag), but prefixes and the other units of a
term scale them exactly: 1 m[IU]/L = 1 u[IU]/mL. `canonical_unit` gives them no form (the
terminology services convert only between commensurable kinds); `comparable_unit`, used
by search, gives a term with one arbitrary atom a canonical form that names the atom, so
it compares only with terms on the same atom. pint makes the atoms dimensionless (it
would equate [IU] with 1 and with [arb'U]), so the atom is computed as a stand-in base
unit (candela) and named back.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

logger = logging.getLogger(__name__)

UCUM = "http://unitsofmeasure.org"
_FACTOR_DIGITS = 12
_MAX_UNIT = 64  # longer texts are not units; never handed to the parser
# UCUM's arbitrary units all end in "U]" or are these special ones.
_ARBITRARY = re.compile(r"\[[^\]]*(?:U|_50|PFU|FFU|CFU|IR|Lf|FEU|ELU|EU|hp_X|hp_C|kp_X|kp_C)\]")


@cache
def _registry() -> Any:
    """ucumvert's pint registry, built on first use (about half a second)."""
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


def _round(value: float) -> Decimal:
    return Decimal(f"{value:.{_FACTOR_DIGITS}g}")


@lru_cache(maxsize=4096)
def canonical_unit(code: str) -> tuple[str, Decimal, Decimal] | None:
    """(canonical unit, factor, offset) with canonical value = value * factor + offset,
    for a UCUM unit code; None when `code` is not a UCUM unit this server can convert.

    The canonical unit is a stable text of SI base units and exponents, e.g.
    "kilogram.meter-3" for mg/dL, g/L and ug/mL alike.
    """
    if not code or len(code) > _MAX_UNIT or _ARBITRARY.search(code):
        return None
    try:
        registry = _registry()
    except Exception:  # noqa: BLE001 - a broken units library must not stop writes
        logger.exception("UCUM unit registry unavailable; quantities get no canonical form")
        return None
    try:
        one = registry.from_ucum(code)
        base = one.to_base_units()
        zero = registry.Quantity(0, one.units).to_base_units().magnitude
    except Exception:  # noqa: BLE001 - any unparsable unit is simply not convertible
        return None
    parts = sorted(base.units._units.items())  # noqa: SLF001 - pint has no public accessor
    unit = ".".join(f"{name}{'' if exp == 1 else int(exp) if exp == int(exp) else exp}"
                    for name, exp in parts) or "1"
    factor = _round(float(base.magnitude) - float(zero))
    offset = _round(float(zero)) if zero else Decimal(0)
    return unit, factor, offset


# The stand-in for an arbitrary atom: a base unit that UCUM terms for clinical quantities
# never use, and whose symbol takes UCUM prefixes like the atom it replaces (m[IU] -> mcd).
_STAND_IN, _STAND_IN_NAME = "cd", "candela"


@lru_cache(maxsize=4096)
def comparable_unit(code: str) -> tuple[str, Decimal, Decimal] | None:
    """`canonical_unit`, extended to terms built on one arbitrary atom: "[IU].meter-3" for
    m[IU]/L and u[IU]/mL alike (factor 1e-3); None when not comparable canonically."""
    found = canonical_unit(code)
    if found is not None or not code or len(code) > _MAX_UNIT:
        return found
    atoms = set(_ARBITRARY.findall(code))
    if len(atoms) != 1 or _STAND_IN in code:
        return None
    (atom,) = atoms
    found = canonical_unit(code.replace(atom, _STAND_IN))
    if found is None or found[2]:
        return None
    unit, factor, _ = found
    named = ".".join(atom + part[len(_STAND_IN_NAME):] if part.startswith(_STAND_IN_NAME)
                     else part for part in unit.split("."))
    return named, factor, Decimal(0)


def unit_problem(code: str) -> str | None:
    """Why `code` is not a valid UCUM unit, or None (terminology.ucum's check: UCUM's
    grammar over its atom table)."""
    from terminology.ucum import problem  # terminology builds on this module; import late

    return problem(code)


def to_canonical(value: Decimal, code: str) -> tuple[str, Decimal] | None:
    """`value` in `code` as (canonical unit, canonical value), or None if not comparable."""
    found = comparable_unit(code)
    if found is None:
        return None
    unit, factor, offset = found
    return unit, value * factor + offset
