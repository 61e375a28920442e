"""What every loader returns and how it reports a bad file."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from terminology.model import CodeSystemHeader, Concept

# Designation uses from SNOMED CT, which FHIR uses for every code system
SCT = "http://snomed.info/sct"
FSN = "900000000000003001"  # fully specified name
SYNONYM = "900000000000013009"

# Release files can have very long fields (LOINC's RELATEDNAMES2, ClaML notes)
csv.field_size_limit(16 * 1024 * 1024)

# R4 datatypes.html#code: at least one character, no leading or trailing whitespace, and no
# whitespace other than single spaces inside (so no tab, newline or double space)
_FHIR_CODE = re.compile(r"[^\s]+( [^\s]+)*")


def is_fhir_code(value: str) -> bool:
    """Whether `value` can be a FHIR `code` as it stands (nothing is trimmed)."""
    return _FHIR_CODE.fullmatch(value) is not None


class LoadError(ValueError):
    """A release file that cannot be read as the format it should be in. The message
    names the file and, where known, the line."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


@dataclass
class Loaded:
    """A code system as a loader reads it: its header, then its concepts, once."""

    header: CodeSystemHeader
    concepts: Iterator[Concept]


def open_text(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file (a BOM is skipped), with a clear error when the file
    is missing or not text."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise LoadError(path, f"cannot open: {exc.strerror or exc}") from None
    with handle:
        try:
            yield from handle
        except UnicodeDecodeError:
            raise LoadError(path, "is not UTF-8 text") from None


def csv_rows(path: Path, required: tuple[str, ...], *, delimiter: str = ",",
             kind: str = "CSV", strict: bool = False) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number where the row starts, row by column name) of a delimited file whose
    first line names the columns; LoadError when a required column is missing or a row has
    too many fields. `strict` also refuses malformed quoting (a quote left open to the end
    of the file, text after a closing quote) instead of reading it as best it can."""
    lines = open_text(path)
    reader = csv.reader(lines, delimiter=delimiter, strict=strict)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise LoadError(path, f"not a readable {kind} file ({exc})", 1) from None
    if header is None:
        raise LoadError(path, "is empty", 1)
    header = [name.strip() for name in header]
    missing = [name for name in required if name not in header]
    if missing:
        hint = _delimiter_hint(header, delimiter)
        raise LoadError(path, f"missing column {', '.join(missing)}{hint}", 1)
    width = len(header)
    start = reader.line_num + 1  # a quoted field can hold newlines: a row spans lines
    try:
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):
                if len(row) > width:
                    raise LoadError(path, f"{len(row)} fields where the header has {width}",
                                    start)
                yield start, dict(zip(header, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise LoadError(path, f"not a readable {kind} row ({exc})", start) from None


def _delimiter_hint(header: list[str], delimiter: str) -> str:
    if len(header) == 1:
        for other, name in (("\t", "tab"), (";", "semicolon"), (",", "comma"), ("|", "bar")):
            if other != delimiter and other in header[0]:
                expected = {"\t": "tab", ",": "comma", ";": "semicolon"}.get(delimiter, delimiter)
                return f" (the header is {name}-separated; this file must be {expected}-separated)"
    return f" (columns found: {', '.join(header[:12])})"
