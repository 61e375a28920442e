"""Cell text to FHIR primitive values: dates in national formats, decimals that keep
their precision, UCUM units, and the per-column transforms of a mapping.

Every parser raises `ValueError` with a message naming what was expected, never the
cell's text (it may be patient data); the caller adds the line and column.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

# Named formats a mapping may list under date_formats (besides any strptime pattern).
NAMED_FORMATS: dict[str, str] = {
    "DD.MM.YYYY": "%d.%m.%Y",
    "DD/MM/YYYY": "%d/%m/%Y",
    "MM/DD/YYYY": "%m/%d/%Y",
    "DD-MM-YYYY": "%d-%m-%Y",
    "YYYYMMDD": "%Y%m%d",
    "YYYY/MM/DD": "%Y/%m/%d",
    "DD.MM.YYYY HH:MM": "%d.%m.%Y %H:%M",
    "DD/MM/YYYY HH:MM": "%d/%m/%Y %H:%M",
    "MM/DD/YYYY HH:MM": "%m/%d/%Y %H:%M",
    "YYYYMMDDHHMMSS": "%Y%m%d%H%M%S",
}
# Tried when a mapping names no formats: the unambiguous ones only (DD/MM against
# MM/DD must be chosen by the mapping).
DEFAULT_FORMATS = ("iso", "YYYYMMDD", "DD.MM.YYYY", "chinese")

_ISO = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?)?)?)?"
)
# 2024年3月1日, optionally with a time 2024年3月1日 8时30分 / 08:30
_CHINESE = re.compile(
    r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]"
    r"(?:\s*(\d{1,2})\s*[时點点:：]\s*(\d{1,2})\s*分?(?:\s*(\d{1,2})\s*秒?)?)?"
)
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def check_formats(formats: Sequence[str]) -> None:
    for name in formats:
        if name not in ("iso", "chinese") and name not in NAMED_FORMATS and "%" not in name:
            raise ValueError(f"unknown date format {name!r} (named formats: iso, chinese, "
                             f"{', '.join(NAMED_FORMATS)}; or a strptime pattern with %)")


def parse_when(text: str, formats: Sequence[str], zone: str, *,
               with_time: bool) -> str:
    """A FHIR date (with_time False) or dateTime. A time without a zone is taken in the
    mapping's `zone`; a date alone stays a date (a valid dateTime of day precision)."""
    value = text.strip()
    for name in formats or DEFAULT_FORMATS:
        found = _parse_one(value, name)
        if found is None:
            continue
        if isinstance(found, str):  # ISO kept as written (partial dates, offsets)
            return found if with_time else found[:10]
        if isinstance(found, datetime):
            if not with_time:
                return found.date().isoformat()
            if found.tzinfo is None:
                found = found.replace(tzinfo=ZoneInfo(zone))
            return found.isoformat()
        return found.isoformat()
    shown = ", ".join(formats or DEFAULT_FORMATS)
    raise ValueError(f"is not a {'date/time' if with_time else 'date'} in the formats {shown}")


def _parse_one(value: str, name: str) -> str | date | datetime | None:
    if name == "iso":
        match = _ISO.fullmatch(value)
        if match is None:
            return None
        if match.group(4) and not match.group(8):
            # a time without a zone: a datetime, so that the mapping's zone applies
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                return None
        try:  # the calendar must agree (2024-02-30 is no date)
            if match.group(3):
                date.fromisoformat(value[:10])
            elif match.group(2):
                date(int(match.group(1)), int(match.group(2)), 1)
        except ValueError:
            return None
        zone = match.group(8)
        if zone and zone != "Z" and ":" not in zone:  # FHIR writes offsets as +hh:mm
            value = value[: -len(zone)] + zone[:3] + ":" + zone[3:]
        value = value.replace(" ", "T", 1)
        if match.group(4) and not match.group(6):  # FHIR times have seconds
            value = value[:16] + ":00" + value[16:]
        if match.group(4):
            try:  # the clock must agree too (25:00 is no time)
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
        return value
    if name == "chinese":
        match = _CHINESE.fullmatch(value)
        if match is None:
            return None
        parts = [int(p) if p else 0 for p in match.groups()]
        try:
            if match.group(4):
                return datetime(*parts[:6])  # type: ignore[arg-type]
            return date(parts[0], parts[1], parts[2])
        except ValueError:
            return None
    pattern = NAMED_FORMATS.get(name, name)
    try:
        parsed = datetime.strptime(value, pattern)
    except ValueError:
        return None
    has_time = any(code in pattern for code in ("%H", "%I", "%M", "%S"))
    return parsed if has_time else parsed.date()


def parse_decimal(text: str, decimal_comma: bool = False) -> Decimal:
    """The number as written: "1.50" stays 1.50 (two decimals), as FHIR decimals keep
    their precision. With `decimal_comma`, "1,50" is read as 1.50."""
    value = text.strip().replace("\u00a0", "").replace(" ", "")
    if decimal_comma:
        value = value.replace(".", "").replace(",", ".")
    if not _DECIMAL.fullmatch(value):
        raise ValueError("is not a number")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError("is not a number") from None
    # FHIR decimals follow XML Schema, whose implementations need support only 18 digits;
    # a longer or far larger/smaller number is no measurement (break-feeds F22) and would
    # be stored, indexed and converted as something else
    if len(number.as_tuple().digits) > MAX_DIGITS:
        raise ValueError(f"has more than {MAX_DIGITS} digits")
    if number and not -MAX_DIGITS <= number.adjusted() < MAX_DIGITS:
        raise ValueError(f"is out of range (beyond 10^{MAX_DIGITS} or below 10^-{MAX_DIGITS})")
    return number


MAX_DIGITS = 18


def parse_integer(text: str) -> int:
    value = text.strip()
    if not re.fullmatch(r"[+-]?\d+", value):
        raise ValueError("is not a whole number")
    return int(value)


_TRUE = {"true", "yes", "y", "1", "ja", "j", "t", "是"}
_FALSE = {"false", "no", "n", "0", "nein", "f", "否"}


def parse_boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("is not a yes/no value")


UCUM = "http://unitsofmeasure.org"

# Common spellings in lab and device exports that are not UCUM codes as written.
UNIT_ALIASES: dict[str, str] = {
    "mg/dl": "mg/dL", "g/dl": "g/dL", "ug/dl": "ug/dL", "µg/dl": "ug/dL", "mmol/l": "mmol/L",
    "umol/l": "umol/L", "µmol/l": "umol/L", "nmol/l": "nmol/L", "pmol/l": "pmol/L",
    "mg/l": "mg/L", "g/l": "g/L", "ng/ml": "ng/mL", "pg/ml": "pg/mL", "µg/l": "ug/L",
    "u/l": "U/L", "iu/l": "[IU]/L", "mu/l": "mU/L", "miu/l": "m[IU]/L", "meq/l": "meq/L",
    "mmhg": "mm[Hg]", "mm hg": "mm[Hg]", "cmh2o": "cm[H2O]", "bpm": "/min",
    "beats/min": "/min", "/min": "/min", "breaths/min": "/min", "celsius": "Cel",
    "°c": "Cel", "degc": "Cel", "deg c": "Cel", "°f": "[degF]", "fahrenheit": "[degF]",
    "kg/m²": "kg/m2", "kg/m^2": "kg/m2", "x10^9/l": "10*9/L", "10^9/l": "10*9/L",
    "x10^12/l": "10*12/L", "10^12/l": "10*12/L", "10^3/ul": "10*3/uL", "10^6/ul": "10*6/uL",
    "/ul": "/uL", "/µl": "/uL", "µl": "uL", "ml": "mL", "dl": "dL", "l": "L",
    "sec": "s", "secs": "s", "min": "min", "hrs": "h", "hr": "h", "lbs": "[lb_av]",
    "lb": "[lb_av]", "in": "[in_i]", "inch": "[in_i]", "ft": "[ft_i]", "percent": "%",
    "ml/min/1.73m2": "mL/min/{1.73_m2}", "ml/min/1,73m²": "mL/min/{1.73_m2}",
}


@lru_cache(maxsize=4096)
def ucum_code(unit: str) -> str | None:
    """The UCUM code for a unit as written in a file, or None when it is not one we
    recognise (then the Quantity keeps the text in `unit` and carries no code)."""
    text = unit.strip()
    if not text:
        return None
    alias = UNIT_ALIASES.get(text.lower())
    if alias is not None:
        return alias
    if re.fullmatch(r"\{[^{}]*\}", text):
        return text  # an annotation alone is a UCUM unit of 1 ({score}, {cells})
    from search.units import canonical_unit

    stripped = re.sub(r"\{[^{}]*\}", "", text) or "1"
    return text if canonical_unit(stripped) is not None else None


def transform(value: str, steps: Sequence[Any]) -> str:
    """Apply a column's transforms in order. Each step is a name (strip, upper, lower,
    digits) or a one-key mapping: {map: {from: to}}, {replace: [pattern, with]},
    {prefix: text}, {suffix: text}, {default: text}."""
    for step in steps:
        if isinstance(step, str):
            if step == "strip":
                value = value.strip()
            elif step == "upper":
                value = value.upper()
            elif step == "lower":
                value = value.lower()
            elif step == "digits":
                value = re.sub(r"\D", "", value)
            continue
        (name, arg), = step.items()
        if name == "map":
            value = arg.get(value, arg.get("*", value))
        elif name == "replace":
            value = re.sub(arg[0], arg[1], value)
        elif name == "prefix":
            value = arg + value if value else value
        elif name == "suffix":
            value = value + arg if value else value
        elif name == "default":
            value = value or arg
    return value


TRANSFORM_NAMES = ("strip", "upper", "lower", "digits")
TRANSFORM_STEPS = ("map", "replace", "prefix", "suffix", "default")
