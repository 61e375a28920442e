"""CSV rows to FHIR resources, by a mapping.

The unit kept in the inputs table is a *row envelope*: the mapping (a built-in's name,
or the whole mapping when it came from a file), the header and one or more rows with
their line numbers, as compact JSON. Good rows are kept in chunks (one input, one
transaction, one Provenance per chunk); a bad row is kept alone, so that `retry`
re-processes exactly that row. The file's encoding and delimiter are resolved before:
an envelope holds text cells, never bytes to decode again.

Idempotence: every resource gets a deterministic identifier (the mapping's identity
system and the identity columns' values) and is written as a conditional update (or,
with `identity.write: create`, a conditional create) on it, so the same row twice
makes nothing new.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapters.csv import values
from adapters.csv.concepts import CodeTranslator, code_translator
from adapters.csv.mapping import Column, Mapping, MappingError, load, parse
from adapters.csv.reader import CsvFormatError, Record
from adapters.hl7v2.bundle import search_token
from adapters.translation import Source, StoreTranslator, Translation, TranslationError
from fhir_server.storage.base import Context, ResourceStore

ENVELOPE_FORMAT = "fhir-fusion/csv-rows/1"
_NAMESPACE = uuid.UUID("0b7a4c52-6f0e-5d41-9a3e-7c1f2b8d9e60")
_SEGMENT = re.compile(r"([A-Za-z]+)(?:\[(\d*)\])?")


class RowError(TranslationError):
    """A row that cannot be translated; the message starts with its line number."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


# -- envelopes -----------------------------------------------------------------------


def mapping_ref(mapping: Mapping, name_or_path: str) -> str | dict[str, Any]:
    """How an envelope names its mapping: by name when built in, else the whole of it
    (a retry must not depend on a file that may have moved)."""
    return mapping.name if name_or_path == mapping.name and not _is_path(name_or_path) else {
        **mapping.source, "name": mapping.name}


def _is_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.endswith((".yaml", ".yml", ".toml"))


def envelope(ref: str | dict[str, Any], header: Sequence[str], rows: Sequence[Record]) -> bytes:
    data = {"format": ENVELOPE_FORMAT, "mapping": ref, "header": list(header),
            "rows": [[r.line, r.cells] for r in rows]}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      default=str).encode("utf-8")


def read_envelope(raw: bytes) -> tuple[Mapping, list[str], list[Record]]:
    try:
        data = json.loads(raw)
        if data.get("format") != ENVELOPE_FORMAT:
            raise ValueError("format")
        header = [str(h) for h in data["header"]]
        rows = [Record(int(line), [str(c) for c in cells]) for line, cells in data["rows"]]
        ref = data["mapping"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TranslationError(f"not a CSV row envelope ({ENVELOPE_FORMAT})") from None
    try:
        mapping = load(ref) if isinstance(ref, str) else parse(ref, str(ref.get("name")))
    except MappingError as exc:
        raise TranslationError(f"mapping: {exc}") from None
    return mapping, header, rows


async def concept_translators(store: ResourceStore, ctx: Context,
                              mapping: Mapping) -> dict[str, CodeTranslator]:
    """The code translations a mapping asks for, read from the store once per file."""
    from terminology.standardise import refresh

    await refresh(store, ctx)  # the source ConceptMaps `RowTranslator.translation` applies
    found: dict[str, CodeTranslator] = {}
    for col in mapping.columns:
        if col.concept_map and col.concept_map not in found:
            found[col.concept_map] = await code_translator(store, ctx, col.concept_map)
    return found


async def translate_envelope(store: ResourceStore, ctx: Context, raw: bytes) -> Translation:
    mapping, header, rows = read_envelope(raw)
    rows_translator = RowTranslator(mapping, header,
                                    await concept_translators(store, ctx, mapping))
    entries = [rows_translator.entry(row) for row in rows if rows_translator.accepts(row)]
    if not entries:
        raise TranslationError("no row of the input is one the mapping takes (see 'when')")
    return rows_translator.translation(entries, [row.line for row in rows])


TRANSLATOR = StoreTranslator(translate_envelope)


# -- rows ------------------------------------------------------------------------------


@dataclass
class RowTranslator:
    mapping: Mapping
    header: list[str]
    concepts: dict[str, CodeTranslator]

    def __post_init__(self) -> None:
        self._index = {name: n for n, name in enumerate(self.header) if name}
        missing = sorted(name for name in self.mapping.needed_columns()
                         if name not in self._index)
        if missing:
            raise CsvFormatError(f"the header lacks the column(s) {', '.join(missing)} that "
                                 f"mapping {self.mapping.name!r} needs")

    def accepts(self, row: Record) -> bool:
        when = self.mapping.when
        if when is None:
            return True
        cell = self._cell(row, when["column"])
        return cell == str(when["equals"]) if "equals" in when else cell in {
            str(v) for v in when["in"]}

    def identity(self, row: Record) -> str:
        cells = []
        for name in self.mapping.identity_columns:
            cell = self._cell(row, name)
            if cell in self.mapping.null_values:
                raise RowError(row.line, f"identity column {name} is empty")
            cells.append(cell)
        if len(cells) == 1:
            return cells[0]
        return hashlib.sha256("\x1f".join(cells).encode("utf-8")).hexdigest()[:40]

    def entry(self, row: Record) -> dict[str, Any]:
        """The bundle entry for one row; RowError names the line and column."""
        if len(row.cells) != len(self.header):
            spans = ""
            if row.end:
                # a quote opened and never closed swallows the lines after it
                spans = (f" (a quoted field runs from line {row.line} to line {row.end}: "
                         "an unclosed quote?)")
            raise RowError(row.line, f"has {len(row.cells)} fields, the header "
                                     f"{len(self.header)}{spans}")
        mapping = self.mapping
        identifier = {"system": mapping.identity_system, "value": self.identity(row)}
        resource: dict[str, Any] = {"resourceType": mapping.resource}
        for path, constant in mapping.constants.items():
            set_path(resource, path, constant)
        for col in mapping.columns:
            text = values.transform(self._cell(row, col.column), col.transforms)
            if text.strip() in mapping.null_values:
                if col.required:
                    raise RowError(row.line, f"column {col.column} is empty")
                continue
            try:
                value = self._value(col, text, row)
            except ValueError as exc:
                raise RowError(row.line, f"column {col.column} {exc}") from None
            if value is not None:
                set_path(resource, col.path, value)
        resource["identifier"] = [identifier, *resource.get("identifier", [])]
        token = search_token(identifier)
        key = f"{mapping.resource}|{identifier['system']}|{identifier['value']}"
        entry: dict[str, Any] = {"fullUrl": f"urn:uuid:{uuid.uuid5(_NAMESPACE, key)}",
                                 "resource": resource}
        if mapping.write == "create":
            entry["request"] = {"method": "POST", "url": mapping.resource, "ifNoneExist": token}
        else:
            entry["request"] = {"method": "PUT", "url": f"{mapping.resource}?{token}"}
        return entry

    def translation(self, entries: list[dict[str, Any]], lines: list[int]) -> Translation:
        where = f"line {lines[0]}" if len(lines) == 1 else f"lines {lines[0]}-{lines[-1]}"
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}
        source = Source(kind=f"CSV ({self.mapping.name} mapping)", sender="CSV file")
        details = {"mapping": self.mapping.name, "rows": len(lines), "where": where}
        terminology = _standardise(bundle["entry"], self.mapping.name)
        if terminology:
            details["terminology"] = terminology
        return Translation(bundle, source, details)

    def _cell(self, row: Record, name: str) -> str:
        """The cell's text, stripped; "" for an optional column the file does not have."""
        n = self._index.get(name)
        return row.cells[n].strip() if n is not None and n < len(row.cells) else ""

    def _value(self, col: Column, text: str, row: Record) -> Any:
        kind = col.type
        if kind in ("string", "code"):
            return text
        if kind == "boolean":
            return values.parse_boolean(text)
        if kind == "integer":
            return values.parse_integer(text)
        if kind == "decimal":
            return values.parse_decimal(text, col.decimal_comma)
        if kind in ("date", "dateTime"):
            return values.parse_when(text, col.date_formats or self.mapping.date_formats,
                                     self.mapping.timezone, with_time=kind == "dateTime")
        if kind == "Identifier":
            return {"system": col.system, "value": text} if col.system else {"value": text}
        if kind == "Reference":  # target and system are checked when the mapping is loaded
            token = search_token({"system": col.system or "", "value": text})
            return {"reference": f"{col.target}?{token}"}
        if kind == "Quantity":
            return self._quantity(col, text, row)
        display = self._cell(row, col.display_column) if col.display_column else ""
        codings = [_coding(col.system, text, display)] if col.system else []
        translate = self.concepts.get(col.concept_map) if col.concept_map else None
        if translate is not None:  # None in a dry run, which reads no store
            for coding in translate(text, col.system):
                if coding not in codings:
                    codings.append(coding)
        if kind == "Coding":
            if not codings:
                raise ValueError("has no system to make a Coding with (mapping: system)")
            return codings[-1] if col.concept_map and len(codings) > 1 else codings[0]
        concept: dict[str, Any] = {}
        if codings:
            concept["coding"] = codings
        if display or not codings:
            concept["text"] = display or text
        return concept

    def _quantity(self, col: Column, text: str, row: Record) -> dict[str, Any]:
        quantity: dict[str, Any] = {"value": values.parse_decimal(text, col.decimal_comma)}
        unit = self._cell(row, col.unit_column) if col.unit_column else (col.unit or "")
        if unit:
            quantity["unit"] = unit
            code = values.ucum_code(unit)
            if code is not None:
                quantity["system"] = values.UCUM
                quantity["code"] = code
        return quantity


def _standardise(entries: list[dict[str, Any]], source: str) -> dict[str, Any] | None:
    """Local codes to LOINC by the source ConceptMap named for this mapping, canonical
    UCUM quantities; what was unmapped or doubtful, for the input's details
    (terminology/standardise.py)."""
    from terminology.standardise import StandardisationReport, standardise_observation

    report = StandardisationReport((source,))
    for entry in entries:
        if entry["resource"]["resourceType"] == "Observation":
            standardise_observation(entry["resource"], report.sources, report=report)
    return report.details()


def _coding(system: str | None, code: str, display: str) -> dict[str, str]:
    coding = {"system": system or "", "code": code}
    if display:
        coding["display"] = display
    return coding


def set_path(resource: dict[str, Any], path: str, value: Any) -> None:
    """Set `value` at an element path: `a.b` (object keys), `a[0]` (list item, made as
    needed), `a[]` (appended to the list)."""
    steps = path.split(".")
    node: Any = resource
    for n, step in enumerate(steps):
        match = _SEGMENT.fullmatch(step)
        if match is None:
            raise MappingError(f"{path!r} is not an element path")
        name, index = match.group(1), match.group(2)
        last = n == len(steps) - 1
        if index is None:
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, {})
            continue
        items = node.setdefault(name, [])
        if index == "":
            items.append(value if last else {})
            node = items[-1]
            continue
        position = int(index)
        while len(items) <= position:
            items.append({})
        if last:
            items[position] = value
        else:
            node = items[position]
