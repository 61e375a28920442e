"""UCUM (http://unitsofmeasure.org) as a code system: an infinite grammar, not a list, so
it is answered by parsing rather than from the concept store.

Validation is ucumvert's parser and unit table (case-sensitive UCUM: "mg/dL" is valid,
"MG/DL" and "mg/" are not); canonical forms and conversion reuse search.units, the
same factors the quantity search index uses.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from search.units import UCUM, _registry, canonical_unit
from terminology.model import Concept
from terminology.store import ConceptDetail, SystemInfo, TerminologyError

if TYPE_CHECKING:
    from terminology.service import Validation

_MAX_UNIT = 64
COPYRIGHT = (
    "UCUM is Copyright (c) 1999-2024 Regenstrief Institute, Inc. and The UCUM "
    "Organization, Indianapolis, IN. All rights reserved. See http://unitsofmeasure.org/"
    "TermsOfUse.html"
)


def system_info() -> SystemInfo:
    return SystemInfo(0, UCUM, None, "UCUM", "Unified Code for Units of Measure", "active",
                      "not-present", None, COPYRIGHT, "en", 0, "ucum")  # fmt: skip


@cache
def _parser() -> Any:
    from ucumvert import get_ucum_parser

    return get_ucum_parser()


@lru_cache(maxsize=4096)
def problem(code: str) -> str | None:
    """Why `code` is not a valid UCUM unit, or None when it is: UCUM's grammar over its
    atom table (ucumvert's parser), so special units pint cannot convert, such as [pH],
    are valid too."""
    if not code or len(code) > _MAX_UNIT or code != code.strip() or " " in code:
        return f"'{code[:_MAX_UNIT]}' is not a valid UCUM unit: empty, too long or with spaces"
    try:
        _parser().parse(code)
    except Exception as exc:  # noqa: BLE001 - lark raises several kinds for bad input
        char, column = getattr(exc, "char", None), getattr(exc, "column", None)
        if char is not None and column is not None:
            return (f"'{code}' is not a valid UCUM unit: unexpected character '{char}' "
                    f"at column {column}")
        return f"'{code}' is not a valid UCUM unit: unexpected end of input"
    return None


def is_valid(code: str) -> bool:
    return problem(code) is None


def display(code: str) -> str:
    """A readable name of the unit (pint's), e.g. "milligram / deciliter"."""
    try:
        return str(_registry().from_ucum(code).units)
    except Exception:  # noqa: BLE001 - callers check validity first
        return code


def canonical(code: str) -> tuple[str, Decimal, Decimal] | None:
    """(canonical base-unit text, factor, offset): see search.units.canonical_unit."""
    return canonical_unit(code)


def convert(value: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """`value` in `from_unit` expressed in `to_unit`; TerminologyError (400) when either is
    not UCUM or they are not commensurable (mg/dL -> g/L works, mg/dL -> mmol/L does not:
    that needs the molar mass)."""
    for unit, where in ((from_unit, "from"), (to_unit, "to")):
        if (why := problem(unit)) is not None:
            raise TerminologyError(400, "code-invalid", why, where)
    a, b = canonical_unit(from_unit), canonical_unit(to_unit)
    if a is None or b is None or a[0] != b[0]:
        raise TerminologyError(
            400, "invalid", f"'{from_unit}' and '{to_unit}' are not commensurable", "to"
        )
    base = value * a[1] + a[2]
    result = (base - b[2]) / b[1]
    # the factors carry 12 significant digits (search.units) and offsets add their own
    # rounding: 10 significant digits of the result are exact (98.6 [degF] is 37 Cel)
    return Decimal(format(Decimal(f"{result:.10g}").normalize(), "f"))


def lookup(code: str) -> ConceptDetail:
    if (why := problem(code)) is not None:
        raise TerminologyError(404, "not-found", why, "code")
    props: dict[str, tuple[object, ...]] = {}
    found = canonical_unit(code)
    if found is not None:
        props["canonical"] = (found[0],)
    return ConceptDetail(Concept(code, display(code), properties=props))


def validate(code: str, given_display: str | None) -> Validation:
    from terminology.service import Validation

    why = problem(code)
    if why is not None:
        return Validation(False, why, None, UCUM, None, code)
    # UCUM has no fixed display (the code itself is the usual one): any display is accepted
    return Validation(True, None, code, UCUM, None, code)
