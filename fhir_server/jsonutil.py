"""JSON that keeps FHIR decimals exactly as they were written.

FHIR says `1.50` and `1.5` are different values (precision is meaningful), so
decimals are parsed into `Decimal` and written back with their own digits.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """Parse JSON, keeping every decimal number as a `Decimal`.

    Raises `ValueError` (json.JSONDecodeError is one) on malformed input.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    return json.loads(data, parse_float=Decimal)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"cannot serialise {type(value).__name__} as JSON")


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, default=_default, option=option)
