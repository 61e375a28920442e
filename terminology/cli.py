"""`fhir-fusion terminology load KIND PATH`, `terminology unmapped` and `terminology maps`.

`load` runs a loader (terminology/loaders) into the concept store of the data folder,
showing progress (concepts and concepts per second, on stderr) and a summary. `unmapped`
lists the local codes the source ConceptMaps did not map, per source, from what
standardisation kept with each stored input (terminology/standardise.py). `maps` lists
the source ConceptMaps and the problems found in them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from terminology.model import Concept

Progress = Callable[[int], None]


def add_terminology_command(commands: Any,
                            add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `terminology load|unmapped` on the CLI's subcommands."""
    from terminology.loaders import KINDS

    parser = commands.add_parser("terminology", help="load code systems; list unmapped codes")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    load = actions.add_parser(
        "load", help="load a licensed release (LOINC, SNOMED CT, ICD ClaML) or a code list",
        description="KIND: " + ", ".join(KINDS) + ". PATH: the release file or folder.")
    load.add_argument("kind", choices=sorted(KINDS), metavar="KIND")
    load.add_argument("path", type=Path, metavar="PATH")
    load.add_argument("--version", dest="cs_version", default=None,
                      help="version of the release (LOINC: e.g. 2.77; default from the files)")
    load.add_argument("--url", default=None, help="code system URL (required for codelist)")
    load.add_argument("--name", default=None, help="codelist: code system name")
    load.add_argument("--language", action="append", default=[], metavar="LANG",
                      help="loinc: linguistic variant to add (repeatable, e.g. zh-CN)")
    load.add_argument("--code-column", default="code", help="codelist: column of the codes")
    load.add_argument("--display-column", default="display", help="codelist: display column")
    load.add_argument("--parent-column", default=None, help="codelist: parent code column")
    load.add_argument("--definition-column", default=None, help="codelist: definition column")
    load.add_argument("--status-column", default=None, help="codelist: status column")
    load.add_argument("--language-column", action="append", default=[], metavar="LANG=COLUMN",
                      help="codelist: a display column in another language (repeatable)")
    load.add_argument("--display-language", default="en",
                      help="codelist: language of the display column (default en)")
    load.add_argument("--delimiter", default=None,
                      help="codelist CSV: field delimiter (default: from the first line)")
    load.add_argument("--sheet", default=None, help="codelist xlsx: sheet name (default first)")
    add_data_dir(load)

    unmapped = actions.add_parser("unmapped",
                                  help="local codes no source ConceptMap maps, per source")
    unmapped.add_argument("--source", default=None,
                          help="only this source (an HL7v2 MSH-4 or MSH-3, or a CSV source)")
    unmapped.add_argument("--limit", type=int, default=100_000,
                          help="look at the newest N stored inputs (default 100000)")
    add_data_dir(unmapped)

    maps = actions.add_parser("maps", help="the source ConceptMaps the adapters apply, and "
                                           "their problems (loops, chains, bad targets)")
    add_data_dir(maps)
    parser.set_defaults(command="terminology", run=run)


def run(args: argparse.Namespace) -> int:
    from fhir_server.cli import _configure_logging, _data_dir

    _configure_logging("warning")
    if args.action == "load":
        return asyncio.run(load(_data_dir(args), args))
    if args.action == "maps":
        return asyncio.run(source_maps(_data_dir(args)))
    return asyncio.run(unmapped(_data_dir(args), args.source, args.limit))


def loader_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of the loader of `args.kind`."""
    from fhir_server.cli import CommandError

    options: dict[str, Any] = {"version": args.cs_version, "url": args.url}
    if args.kind == "loinc" and args.language:
        options["languages"] = tuple(args.language)
    if args.kind == "snomed":  # staging reads every file before the first concept
        options["progress"] = lambda text: print(f"terminology load: {text}", file=sys.stderr,
                                                 flush=True)
    if args.kind == "codelist":
        from terminology.loaders.codelist import Columns

        languages = {}
        for item in args.language_column:
            lang, sep, column = item.partition("=")
            if not sep or not lang or not column:
                raise CommandError(f"--language-column {item!r} is not LANG=COLUMN")
            languages[lang] = column
        options.update(
            name=args.name, language=args.display_language, delimiter=args.delimiter,
            sheet=args.sheet,
            columns=Columns(code=args.code_column, display=args.display_column or None,
                            parent=args.parent_column, definition=args.definition_column,
                            status=args.status_column, languages=languages))
    return options


class Tally:
    """Counts what passes through to the store: designations and their languages."""

    def __init__(self, concepts: Iterator[Concept]) -> None:
        self._concepts = concepts
        self.designations = 0
        self.languages: set[str] = set()

    def __iter__(self) -> Iterator[Concept]:
        for concept in self._concepts:
            self.designations += len(concept.designations)
            self.languages.update(d.language for d in concept.designations if d.language)
            yield concept


def progress_printer(out: Any = sys.stderr, every: float = 2.0) -> Progress:
    started = time.perf_counter()
    last = [started]

    def show(count: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= every:
            last[0] = now
            rate = count / max(now - started, 1e-9)
            print(f"terminology load: {count:,} concepts ({rate:,.0f}/s)", file=out, flush=True)

    return show


async def load(data_dir: Path, args: argparse.Namespace) -> int:
    from fhir_server.cli import CommandError, _open_store
    from fhir_server.errors import FHIRError
    from terminology.loaders import KINDS, LoadError
    from terminology.store import concept_store

    module, _, function = KINDS[args.kind].partition(":")
    loader = getattr(importlib.import_module(module), function)
    started = time.perf_counter()
    store = await _open_store(data_dir)
    try:
        try:
            loaded = loader(args.path, **loader_options(args))
            tally = Tally(loaded.concepts)
            summary = await concept_store(store).load_code_system(
                _cli_context(), loaded.header, tally, progress=progress_printer())
        except LoadError as exc:
            raise CommandError(f"cannot load {args.kind}: {exc}") from None
        except FHIRError as exc:
            raise CommandError(f"cannot load {args.kind}: {exc}") from None
    finally:
        await store.close()
    seconds = time.perf_counter() - started
    languages = ", ".join(sorted(tally.languages)) or "none"
    version = f" version {summary.version}" if summary.version else ""
    print(f"loaded {loaded.header.name} ({summary.url}{version}): {summary.concepts:,} concepts, "
          f"{summary.designations:,} designations, languages {languages}, in {seconds:.1f} s "
          f"({summary.concepts / max(seconds, 1e-9):,.0f} concepts/s)"
          + ("; replaced the earlier load" if summary.replaced else ""))
    if loaded.header.copyright:
        print(f"licence notice: {loaded.header.copyright}")
    return 0


def _cli_context() -> Any:
    """The context the other offline commands use (caller "cli")."""
    from fhir_server.cli import CLI_CONTEXT

    return CLI_CONTEXT


async def unmapped(data_dir: Path, source: str | None, limit: int) -> int:
    from fhir_server.cli import _open_store

    store = await _open_store(data_dir, must_exist=True)
    try:
        inputs = await store.list_inputs(_cli_context(), status="stored", limit=limit)
    finally:
        await store.close()
    rows = unmapped_codes((raw.result or {} for raw in inputs), source)
    if not rows:
        print("no unmapped codes" + (f" for source {source}" if source else ""))
        return 0
    print("source\tsystem\tcode\tdisplay\tcount\tinputs")
    for row in rows:
        print("\t".join(str(row[k]) for k in ("source", "system", "code", "display", "count",
                                               "inputs")))
    return 0


async def source_maps(data_dir: Path) -> int:
    """Exit status 0 when every source map is usable as it is, 1 when one has problems."""
    from fhir_server.cli import _open_store
    from terminology.standardise import load_source_maps

    store = await _open_store(data_dir, must_exist=True)
    try:
        maps = await load_source_maps(store, _cli_context())
    finally:
        await store.close()
    if not maps.by_source:
        print("no source ConceptMaps (a ConceptMap names its source in useContext, "
              "see docs/terminology-loaders.md)")
        return 0
    print("source\tconcept map\tcodes\tunits")
    for source, compiled in sorted(maps.by_source.items()):
        for found in compiled:
            print(f"{source}\t{found.url}\t{len(found.codes)}\t{len(found.units)}")
    for issue in maps.issues:
        print(f"{issue.severity}: {issue.diagnostics}")
    return 1 if maps.issues else 0


def unmapped_codes(results: Any, source: str | None = None) -> list[dict[str, Any]]:
    """Unmapped codes summed over the stored inputs' results, by source, then the most
    frequent first."""
    table: dict[tuple[str, str, str], dict[str, Any]] = {}
    for result in results:
        terminology = (result.get("details") or {}).get("terminology") or {}
        sources = terminology.get("sources") or []
        if source is not None and source not in sources:
            continue
        name = sources[0] if sources else "unknown"
        for entry in terminology.get("unmapped") or []:
            key = (name, entry.get("system", ""), entry.get("code", ""))
            row = table.setdefault(key, {"source": name, "system": key[1], "code": key[2],
                                         "display": entry.get("display", ""), "count": 0,
                                         "inputs": 0})
            row["count"] += int(entry.get("count", 1))
            row["inputs"] += 1
    return sorted(table.values(), key=lambda r: (r["source"], -r["count"], r["code"]))
