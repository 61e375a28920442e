"""JSON that keeps FHIR decimals exactly as they were written.

FHIR says `1.50` and `1.5` are different values (precision is meaningful), so
decimals are parsed into `Decimal` and written back with their own digits.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (RFC 8259 leaves the meaning open; FHIR
    JSON has one value per property, so the body is rejected rather than guessed at)."""


def _parse_int(text: str) -> int | Decimal:
    # orjson writes only 64-bit integers; longer ones stay Decimal so that they are
    # written back with their digits (and `integer` validation rejects them by range).
    return int(text) if len(text) < 19 else Decimal(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        keys = [key for key, _ in pairs]
        duplicate = next(key for i, key in enumerate(keys) if key in keys[:i])
        raise DuplicateKeyError(f"The JSON object has the key {duplicate[:60]!r} more than once")
    return result


def _constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which RFC 8259 does not allow (and orjson
    # would write back as null).
    raise ValueError(f"{name} is not a JSON number")


def loads(data: bytes | str) -> Any:
    """Parse JSON, keeping every decimal number (and any integer too long for 64 bits)
    as a `Decimal`.

    Raises `ValueError` on malformed input: json.JSONDecodeError, DuplicateKeyError for
    an object with a repeated key, or plain ValueError for NaN and Infinity.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    return json.loads(
        data,
        parse_float=Decimal,
        parse_int=_parse_int,
        parse_constant=_constant,
        object_pairs_hook=_object,
    )


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"cannot serialise {type(value).__name__} as JSON")


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, default=_default, option=option)
