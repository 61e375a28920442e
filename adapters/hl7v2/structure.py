"""Optional strict check of a message against its version's structure and tables, with
hl7apy.

hl7apy knows every version's message structures, segment definitions, data types and
tables, which python-hl7 does not; but building its typed tree costs about 20 ms per lab
result, so it runs only when `Hl7Options(check_structure=True)` asks for it (for
example to vet a new interface), never on the default hot path.

hl7apy's error texts name elements (`OBX.OBX_3`) and sometimes echo values, so they are
not passed on: the element name is turned into a location and the text is ours.
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache

from adapters.hl7v2.errors import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    Hl7Error,
    Location,
)
from adapters.hl7v2.message import Message

_ELEMENT = re.compile(r"\b([A-Z][A-Z0-9]{2})_(\d+)\b")
_SEGMENT = re.compile(r"<Segment ([A-Z][A-Z0-9]{2})>")


def _text(msg: Message) -> str:
    """The message re-serialised with its own delimiters (CR after each segment)."""
    d = msg.delimiters
    lines = []
    for seg in msg.segments:
        fields = []
        for n, field in enumerate(seg.fields):
            if seg.name == "MSH" and n in (1, 2):
                fields.append(field[0][0][0])
                continue
            fields.append(d.repetition.join(
                d.component.join(d.subcomponent.join(_escape(s, msg) for s in comp)
                                 for comp in rep) for rep in field))
        line = fields[0] + d.field + d.field.join(fields[2:]) if seg.name == "MSH" else \
            d.field.join(fields)
        lines.append(line)
    return "\r".join(lines)


def _escape(text: str, msg: Message) -> str:
    d = msg.delimiters
    out = text.replace(d.escape, f"{d.escape}E{d.escape}")
    for ch, code in ((d.field, "F"), (d.component, "S"), (d.subcomponent, "T"),
                     (d.repetition, "R")):
        out = out.replace(ch, f"{d.escape}{code}{d.escape}")
    return out.replace("\n", f"{d.escape}.br{d.escape}")


def check_structure(msg: Message) -> None:
    """Raise Hl7Error (AE) naming the first structural problem hl7apy finds."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message
    from hl7apy.validation import Validator

    try:
        parsed = parse_message(_text(msg), validation_level=VALIDATION_LEVEL.TOLERANT,
                               find_groups=True)
        Validator.validate(parsed, report_file=None)
    except HL7apyException as exc:
        raise _as_error(str(exc)) from None
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise Hl7Error(f"The message does not follow the structure of its version "
                       f"({type(exc).__name__})", SEGMENT_SEQUENCE_ERROR) from None
    check_tables(msg)


# Coded fields the translation maps, with their HL7 tables (v2.5 chapter 2C).
CODED_FIELDS = (("PID", 8, "0001"), ("PID", 16, "0002"), ("PV1", 2, "0004"),
                ("OBX", 8, "0078"), ("OBX", 11, "0085"))
_TABLE_VERSIONS = ("2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.1", "2.8.2")


@lru_cache(maxsize=None)
def _tables(version: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """hl7apy's tables for `version`, or for the nearest earlier version it has
    (it ships none for 2.3, so 2.3 uses 2.3.1's)."""
    known = [v for v in _TABLE_VERSIONS if _key(v) <= _key(version)] or ["2.3.1"]
    module = importlib.import_module(f"hl7apy.v{known[-1].replace('.', '_')}.tables")
    tables: dict[str, tuple[str, tuple[str, ...]]] = module.TABLES
    return tables


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def check_tables(msg: Message) -> None:
    """Raise Hl7Error 103 (AE) when a coded field the translation maps holds a code its
    table does not list."""
    tables = _tables(msg.version)
    for name, field, table in CODED_FIELDS:
        codes = tables.get(f"HL7{table}", ("", ()))[1]
        if not codes:
            continue
        for seg in msg.all(name):
            for rep in seg.reps(field):
                code = rep[0][0].strip() if rep and rep[0] else ""
                if code and code not in codes:
                    raise Hl7Error(f"The code is not in HL7 table {table}",
                                   TABLE_VALUE_NOT_FOUND, seg.loc(field))


def _as_error(text: str) -> Hl7Error:
    element = _ELEMENT.search(text)
    segment = _SEGMENT.search(text)
    location = Location()
    if element:
        location = Location(element[1], 1, int(element[2]))
    elif segment:
        location = Location(segment[1], 1)
    if text.startswith("Missing required child"):
        return Hl7Error("A required element is missing", REQUIRED_FIELD_MISSING, location)
    if text.startswith("Datatype"):
        return Hl7Error("An element has the wrong data type", DATA_TYPE_ERROR, location)
    if text.startswith("Child limit exceeded"):
        return Hl7Error("An element repeats more often than allowed", SEGMENT_SEQUENCE_ERROR,
                        location)
    return Hl7Error("An element is not allowed where it is in the message structure",
                    SEGMENT_SEQUENCE_ERROR, location)
