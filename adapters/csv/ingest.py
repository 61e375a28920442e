"""Loading one CSV file through the pipeline.

The rows are translated here first, one by one, so that a bad row is found with its
line number and kept on its own (a row envelope, re-processable with `retry`) while the
good rows go on. Good rows are stored in chunks of `CHUNK_ROWS`: one input, one
transaction and one Provenance per chunk is what makes thousands of rows a second
possible. A chunk the store refuses (a row whose patient is unknown, a resource the
validator rejects) is taken apart and stored row by row, so that only the bad rows are
rejected. Loading the same file again finds every chunk by its hash: nothing new.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from adapters.csv.mapping import Mapping, load
from adapters.csv.reader import Record, open_text, records
from adapters.csv.translate import (
    RowError,
    RowTranslator,
    concept_translators,
    envelope,
    mapping_ref,
)
from adapters.pipeline import IngestResult, Pipeline
from fhir_server.storage.base import Context

FEED = "csv"
CHUNK_ROWS = 500

# unchanged: the row's conditional create found its resource already there (the same
# rows re-imported in another encoding, a second row for one patient): nothing written
RowStatus = Literal["stored", "unchanged", "duplicate", "rejected", "skipped"]


@dataclass
class RowOutcome:
    line: int
    status: RowStatus
    input_id: int | None = None
    reason: str | None = None
    # the transaction-response entry of the row's resource, when it was stored now
    response: dict[str, Any] | None = None


@dataclass
class CsvSummary:
    mapping: str
    encoding: str = ""
    delimiter: str = ""
    rows: list[RowOutcome] = field(default_factory=list)

    def count(self, status: RowStatus) -> int:
        return sum(1 for row in self.rows if row.status == status)

    def __str__(self) -> str:
        unchanged = self.count("unchanged")
        lines = [f"{len(self.rows)} rows ({self.encoding}, delimiter {self.delimiter!r}, "
                 f"mapping {self.mapping}): {self.count('stored')} stored, "
                 + (f"{unchanged} unchanged (already stored, not changed), " if unchanged
                    else "")
                 + f"{self.count('duplicate')} duplicate, {self.count('rejected')} rejected, "
                 f"{self.count('skipped')} skipped"]
        lines += [f"  rejected: {row.reason} (input {row.input_id})"
                  for row in self.rows if row.status == "rejected"]
        return "\n".join(lines)


@dataclass
class _Chunk:
    rows: list[Record] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)


async def ingest_csv(pipeline: Pipeline, ctx: Context, data: bytes, mapping_name: str, *,
                     encoding: str | None = None, delimiter: str | None = None,
                     chunk_rows: int = CHUNK_ROWS) -> CsvSummary:
    """Store the rows of one file. A file that cannot be read at all (encoding, header,
    a column the mapping needs) raises CsvFormatError; a mapping that cannot be used,
    MappingError; both before anything is stored."""
    mapping = load(mapping_name)
    ref = mapping_ref(mapping, mapping_name)
    source = open_text(data, encoding, delimiter)
    header, rows = records(source)
    translator = RowTranslator(mapping, header,
                               await concept_translators(pipeline.store, ctx, mapping))
    summary = CsvSummary(mapping.name, source.encoding, source.delimiter)
    chunk = _Chunk()
    for row in rows:
        if not translator.accepts(row):
            summary.rows.append(RowOutcome(row.line, "skipped"))
            continue
        try:
            entry = translator.entry(row)
        except RowError as exc:
            result = await pipeline.keep_rejected(ctx, FEED, envelope(ref, header, [row]),
                                                  str(exc))
            summary.rows.append(RowOutcome(row.line, "rejected", result.input_id, str(exc)))
            continue
        key = entry["request"].get("ifNoneExist") or entry["request"]["url"]
        if key in chunk.keys or len(chunk.rows) >= chunk_rows:
            # one transaction may not touch a resource twice: the repeat starts a chunk
            await _store(pipeline, ctx, translator, ref, header, chunk, summary)
            chunk = _Chunk()
        chunk.rows.append(row)
        chunk.entries.append(entry)
        chunk.keys.add(key)
    await _store(pipeline, ctx, translator, ref, header, chunk, summary)
    summary.rows.sort(key=lambda row: row.line)
    return summary


def preview(data: bytes, mapping_name: str, *, encoding: str | None = None,
            delimiter: str | None = None, limit: int = 5
            ) -> list[tuple[int, dict[str, Any] | str]]:
    """The resources (or the rejection reasons) of the first `limit` rows the mapping
    takes, as (line, resource or reason), without a store: ConceptMaps are not applied."""
    mapping: Mapping = load(mapping_name)
    header, rows = records(open_text(data, encoding, delimiter))
    translator = RowTranslator(mapping, header, {})
    shown: list[tuple[int, dict[str, Any] | str]] = []
    for row in rows:
        if len(shown) >= limit:
            break
        if not translator.accepts(row):
            continue
        try:
            shown.append((row.line, translator.entry(row)["resource"]))
        except RowError as exc:
            shown.append((row.line, str(exc)))
    return shown


async def _store(pipeline: Pipeline, ctx: Context, translator: RowTranslator,
                 ref: str | dict[str, Any], header: list[str], chunk: _Chunk,
                 summary: CsvSummary) -> None:
    if not chunk.rows:
        return
    # the store's calls need not suspend: let other requests in between two chunks
    await asyncio.sleep(0)
    async with pipeline.store.batch(ctx):
        if len(chunk.rows) > 1:
            result = await pipeline.ingest(
                ctx, FEED, envelope(ref, header, chunk.rows),
                translation=translator.translation(chunk.entries,
                                                   [r.line for r in chunk.rows]),
                units=len(chunk.rows), keep_rejected=False)
            if result.status != "rejected":
                _record(summary, chunk.rows, result, chunk.entries)
                return
        # translated again: storing the chunk may have rewritten its entries
        for row in chunk.rows:
            entry = translator.entry(row)
            result = await pipeline.ingest(
                ctx, FEED, envelope(ref, header, [row]),
                translation=translator.translation([entry], [row.line]))
            _record(summary, [row], result, [entry])


def _record(summary: CsvSummary, rows: list[Record], result: IngestResult,
            entries: list[dict[str, Any]]) -> None:
    responses = (result.response or {}).get("entry", [])
    for n, row in enumerate(rows):
        response = responses[n].get("response") if n < len(responses) else None
        status: RowStatus = result.status
        if status == "stored" and n < len(entries) and _matched(entries[n], response):
            status = "unchanged"
        summary.rows.append(RowOutcome(row.line, status, result.input_id,
                                       result.reason, response))


def _matched(entry: dict[str, Any], response: dict[str, Any] | None) -> bool:
    """Whether a conditional create found its resource stored already (200, not 201)."""
    request = entry.get("request", {})
    return (request.get("method") == "POST" and bool(request.get("ifNoneExist"))
            and str((response or {}).get("status", "")).startswith("200"))
