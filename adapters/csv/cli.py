"""`fhir-fusion ingest csv FILE... --mapping NAME|PATH [--encoding] [--delimiter]
[--dry-run]`: the logic behind the command (fhir_server/cli.py parses the arguments)."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.csv.ingest import ingest_csv, preview
from adapters.csv.mapping import MappingError
from adapters.csv.reader import CsvFormatError
from adapters.pipeline import Pipeline
from fhir_server import jsonutil
from fhir_server.storage.base import Context

DRY_RUN_ROWS = 3


def dry_run(paths: list[Path], mapping: str, encoding: str | None,
            delimiter: str | None) -> tuple[int, str]:
    """(exit status, text): the first resources each file would make, nothing stored.
    Prints patient data to the operator's terminal, as they asked."""
    out: list[str] = []
    status = 0
    for path in paths:
        try:
            shown = preview(path.read_bytes(), mapping, encoding=encoding,
                            delimiter=delimiter, limit=DRY_RUN_ROWS)
        except (OSError, MappingError, CsvFormatError) as exc:
            out.append(f"{path}: {_reason(exc)}")
            status = 1
            continue
        out.append(f"{path}: the first {len(shown)} rows the mapping takes (dry run, "
                   "nothing stored; ConceptMaps not applied)")
        for line, made in shown:
            text = made if isinstance(made, str) else json.dumps(
                json.loads(jsonutil.dumps(made)), indent=2, ensure_ascii=False)
            out.append(f"line {line}: {text}" if not isinstance(made, str) else text)
    return status, "\n".join(out)


async def ingest_paths(pipeline: Pipeline, ctx: Context, paths: list[Path], mapping: str,
                       encoding: str | None, delimiter: str | None) -> tuple[int, str]:
    """(exit status, summary): 0 when every file could be read, whatever became of its
    rows (rejected ones are in the dead-letter queue); 1 when a file could not."""
    out: list[str] = []
    status = 0
    for path in paths:
        try:
            summary = await ingest_csv(pipeline, ctx, path.read_bytes(), mapping,
                                       encoding=encoding, delimiter=delimiter)
        except (OSError, MappingError, CsvFormatError) as exc:
            out.append(f"{path}: not loaded: {_reason(exc)}")
            status = 1
            continue
        out.append(f"{path}: {summary}")
    return status, "\n".join(out)


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"cannot read it ({exc.strerror or exc})"
    return str(exc)
