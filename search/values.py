"""Value normalisation shared by indexing and querying, so both sides agree exactly.

- Strings are compared lowercased, without accents and with collapsed whitespace
  (R4 search.html#string: "case- and accent-insensitive").
- Dates are ranges [low, high] of integer microseconds since 1970-01-01T00:00:00Z, both
  ends inclusive; a value covers the whole interval its precision implies
  (R4 search.html#date: "2024" is the whole year). Open ends use DATE_MIN / DATE_MAX.
- References are split into (target type, target id); absolute URLs keep the whole URL
  as the id.
- Numbers are Decimals; a searched number covers the range its precision implies
  (R4 search.html#number: "100" means [99.5, 100.5)).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from conformance.definitions import RESOURCE_TYPES

DATE_MIN = -(2**62)
DATE_MAX = 2**62
MAX_STRING = 512  # longer strings are indexed by their first 512 characters

_US_PER_DAY = 86_400_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_WHITESPACE = re.compile(r"\s+")


# Latin letters whose accent-like stroke has no Unicode decomposition (NFKD keeps them);
# folded by hand so that "Ødegård" is found by "odegard" and "Łódź" by "lodz".
_FOLD = str.maketrans({"ø": "o", "Ø": "o", "ł": "l", "Ł": "l", "đ": "d", "Đ": "d",
                       "ħ": "h", "Ħ": "h", "ŧ": "t", "Ŧ": "t", "ı": "i", "æ": "ae", "Æ": "ae",
                       "œ": "oe", "Œ": "oe", "þ": "th", "Þ": "th"})  # fmt: skip


def normalize_text(text: str) -> str:
    """Lowercase, strip accents (NFKD, then drop combining marks, then _FOLD), collapse
    whitespace. Scripts without case or accents (Chinese, Japanese kana after NFKD)
    pass through unchanged."""
    if text.isascii():
        return _WHITESPACE.sub(" ", text).strip().lower()
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _WHITESPACE.sub(" ", stripped.translate(_FOLD)).strip().casefold()


def _day_us(year: int, month: int, day: int) -> int:
    return (date(year, month, day).toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def date_range(text: str) -> tuple[int, int] | None:
    """The [low, high] microsecond range a FHIR date, dateTime or instant covers, or None
    when `text` is not one. Times without a zone are taken as UTC; dates without a time
    cover the UTC day(s)."""
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    year_s, month_s, day_s, hour_s, minute_s, second_s, fraction, zone = match.groups()
    try:
        year = int(year_s)
        if month_s is None:
            low = _day_us(year, 1, 1)
            high = _day_us(year, 12, 31) + _US_PER_DAY
            return low, high - 1
        month = int(month_s)
        if day_s is None:
            low = _day_us(year, month, 1)
            end_year, end_month = _next_month(year, month)
            high = _day_us(end_year, end_month, 1) if end_year <= 9999 else low + 31 * _US_PER_DAY
            return low, high - 1
        day = int(day_s)
        low = _day_us(year, month, day)
        if hour_s is None:
            return low, low + _US_PER_DAY - 1
        hour, minute = int(hour_s), int(minute_s)
        if hour > 23 or minute > 59:
            return None
        low += (hour * 3600 + minute * 60) * 1_000_000
        width = 60_000_000
        if second_s is not None:
            second = int(second_s)
            if second > 59:
                return None
            low += second * 1_000_000
            width = 1_000_000
            if fraction:
                digits = fraction[:6]
                low += int(digits.ljust(6, "0"))
                width = 10 ** (6 - len(digits))
        if zone and zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            zh, zm = int(zone[1:3]), int(zone[4:6])
            if zh > 14 or zm > 59:
                return None
            low -= sign * (zh * 3600 + zm * 60) * 1_000_000
        return low, low + width - 1
    except ValueError:  # e.g. month 13 or February 30
        return None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO_MIN = "0001-01-01T00:00:00.000000+00:00"
_ISO_MAX = "9999-12-31T23:59:59.999999+00:00"


def iso_utc(microseconds: int) -> str:
    """The fixed-width text form used by resources.last_updated
    ('2026-12-04T16:40:00.123456+00:00'), clamped to years 0001..9999."""
    try:
        moment = _EPOCH + timedelta(microseconds=microseconds)
    except OverflowError:
        return _ISO_MIN if microseconds < 0 else _ISO_MAX
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.%f+00:00")


_VERSION_SUFFIX = re.compile(r"/_history/[^/]+$")


def split_reference(reference: str) -> tuple[str, str] | None:
    """(target type, target id) of a Reference.reference, canonical or uri.

    "Patient/123" and "Patient/123/_history/2" give ("Patient", "123"). An absolute URL
    gives its type when it ends in Type/id, and the whole URL (without _history) as id,
    so a search by the same URL finds it. Local references ("#x") give None.
    """
    if not reference or reference.startswith("#"):
        return None
    reference = _VERSION_SUFFIX.sub("", reference)
    if "://" not in reference and not reference.startswith("urn:"):
        target_type, sep, target_id = reference.partition("/")
        if sep and target_type in RESOURCE_TYPES and target_id and "/" not in target_id:
            return target_type, target_id
        return None
    parts = reference.rsplit("/", 2)
    target_type = parts[-2] if len(parts) == 3 and parts[-2] in RESOURCE_TYPES else ""
    return target_type, reference


# FHIR decimal (R4 datatypes.html#decimal), with the exponent form search.html#number allows
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
NUMBER_MAX = 1e308  # open ends of a Range; a REAL column holds it


def parse_number(text: str) -> Decimal | None:
    """A search or resource decimal as a Decimal, or None when `text` is not one."""
    if len(text) > 64 or _NUMBER.fullmatch(text) is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def number_precision(text: str, value: Decimal) -> Decimal:
    """Half the unit of the last significant digit of a searched number: the number's
    implicit range is [value - p, value + p) (R4 search.html#number: "100" is 99.5 up to
    100.5, "100.00" 99.995 up to 100.005).

    The spec's table gives "1e2" as 95 up to 105, one digit finer than its mantissa
    shows; exponent forms follow that table.
    """
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        return Decimal(0)
    if "e" in text.lower():
        exponent -= 1
    return Decimal(5).scaleb(exponent - 1)
