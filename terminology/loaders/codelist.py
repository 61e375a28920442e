"""Local and national code lists from CSV or Excel: a hospital's own laboratory codes,
an instrument's test codes, a national ICD-10 clinical edition published as a table.

The columns are named by option (`Columns`): code (required), display, parent (a code
of the same list, for a hierarchy), definition, status (a value of inactive, retired,
deprecated or 0/false makes the concept inactive) and one display column per further
language ("zh-CN" -> "名称"). A CSV's delimiter is taken from its first line (comma,
semicolon, tab or bar) unless given; an .xlsx is read row by row (openpyxl read-only),
from the first sheet or the one named.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from terminology.loaders.base import (SCT, SYNONYM, LoadError, Loaded, csv_rows,
                                      is_fhir_code, open_text)
from terminology.model import CodeSystemHeader, Concept, Designation

_INACTIVE = {"inactive", "retired", "deprecated", "0", "false", "no", "n"}
_DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class Columns:
    """Which column holds what; names as in the file's first row."""

    code: str = "code"
    display: str | None = "display"
    parent: str | None = None
    definition: str | None = None
    status: str | None = None
    languages: dict[str, str] = field(default_factory=dict)  # BCP 47 tag -> column


def load_codelist(path: Path, *, url: str | None = None, version: str | None = None,
                  name: str | None = None, columns: Columns | None = None,
                  language: str = "en", delimiter: str | None = None,
                  sheet: str | None = None) -> Loaded:
    """A code list as a code system at `url` (required: a local list has no canonical
    URL of its own). `language` is the language of the display column."""
    if not url:
        raise LoadError(path, "a code list needs the URL of its code system (--url)")
    columns = columns or Columns()
    if not path.is_file():
        raise LoadError(path, "is not a file")
    header = CodeSystemHeader(
        url=url, version=version, name=name or _name_from(path), title=None,
        content="complete", hierarchy_meaning="is-a" if columns.parent else None,
        language=language,
    )
    if path.suffix.lower() in {".xlsx", ".xlsm"}:
        rows = _xlsx_rows(path, _required(columns), sheet)
    else:
        # strict: a quote left open would otherwise swallow the rest of the file as one
        # code (a hand-edited list is where that happens)
        rows = csv_rows(path, _required(columns), delimiter=delimiter or _sniff(path),
                        strict=True)
    return Loaded(header, _concepts(path, rows, columns, language))


def _required(columns: Columns) -> tuple[str, ...]:
    names = [columns.code, columns.display, columns.parent, columns.definition, columns.status,
             *columns.languages.values()]
    return tuple(n for n in names if n)


def _name_from(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "_", path.stem).strip("_") or "CodeList"
    return stem[0].upper() + stem[1:]


def _sniff(path: Path) -> str:
    """The delimiter of the first line: the most frequent of comma, semicolon, tab, bar."""
    if path.suffix.lower() in {".tsv", ".tab"}:
        return "\t"
    first = next(iter(open_text(path)), "")
    counts = {d: first.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _xlsx_rows(path: Path, required: tuple[str, ...],
               sheet: str | None) -> Iterator[tuple[int, dict[str, str]]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many types for a bad file
        raise LoadError(path, f"is not an Excel workbook ({type(exc).__name__})") from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise LoadError(path, f"has no sheet {sheet!r} (sheets: {', '.join(book.sheetnames)})")
        rows = (book[sheet] if sheet else book.worksheets[0]).iter_rows(values_only=True)
        first = next(rows, None)
        if first is None:
            raise LoadError(path, "the sheet is empty", 1)
        header = [_cell(v) for v in first]
        missing = [n for n in required if n not in header]
        if missing:
            raise LoadError(path, f"missing column {', '.join(missing)} "
                                  f"(columns found: {', '.join(h for h in header if h)})", 1)
        for number, values in enumerate(rows, start=2):
            cells = [_cell(v) for v in values]
            if any(cells):
                yield number, dict(zip(header, cells))
    finally:
        book.close()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a numeric code typed into Excel: 1234.0 -> "1234"
    return str(value).strip()


def _concepts(path: Path, rows: Iterator[tuple[int, dict[str, str]]], columns: Columns,
              language: str) -> Iterator[Concept]:
    """The list's concepts, after the whole file is read: a parent that is not a code of
    the list, or parents that go round in a cycle, refuse the file naming the line (a
    code list is small; a hierarchy checked only in part would answer $subsumes wrong)."""
    lines: dict[str, int] = {}
    concepts = list(_read_concepts(path, rows, columns, language, lines))
    parent_of = {c.code: c.parents[0] for c in concepts if c.parents}
    for code, parent in parent_of.items():
        if parent not in lines:
            raise LoadError(path, f"parent {parent!r} of {code!r} is not a code of the list "
                            f"({columns.parent})", lines[code])
    done: set[str] = set()
    for start in parent_of:
        path_codes: list[str] = []
        code: str | None = start
        while code is not None and code not in done:
            if code in path_codes:
                cycle = path_codes[path_codes.index(code):] + [code]
                raise LoadError(path, "parents go round in a cycle: "
                                + " -> ".join(repr(c) for c in cycle), lines[code])
            path_codes.append(code)
            code = parent_of.get(code)
        done.update(path_codes)
    yield from concepts


def _read_concepts(path: Path, rows: Iterator[tuple[int, dict[str, str]]], columns: Columns,
                   language: str, seen: dict[str, int]) -> Iterator[Concept]:
    for line, row in rows:
        code = row.get(columns.code) or ""
        if not code.strip():
            raise LoadError(path, f"empty {columns.code}", line)
        if not is_fhir_code(code):
            # served as-is, it would be invalid FHIR; trimming would silently change it
            raise LoadError(path, f"{columns.code} {code!r} is not a FHIR code (no leading, "
                            "trailing, tab, newline or double spaces)", line)
        if code in seen:
            raise LoadError(path, f"code {code!r} again (first on line {seen[code]})", line)
        seen[code] = line
        display = (row.get(columns.display) or "").strip() if columns.display else ""
        designations = [Designation(display, language, SCT, SYNONYM)] if display else []
        for lang, column in columns.languages.items():
            text = (row.get(column) or "").strip()
            if text:
                designations.append(Designation(text, lang, SCT, SYNONYM))
        parent = (row.get(columns.parent) or "").strip() if columns.parent else ""
        definition = (row.get(columns.definition) or "").strip() if columns.definition else ""
        status = (row.get(columns.status) or "").strip() if columns.status else ""
        yield Concept(code=code, display=display or None, definition=definition or None,
                      designations=tuple(designations), parents=(parent,) if parent else (),
                      active=status.lower() not in _INACTIVE)


__all__ = ["Columns", "load_codelist"]
