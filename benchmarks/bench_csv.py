"""CSV lab rows into Observations through the pipeline (adapters/csv/ingest.py).

    .venv/bin/python benchmarks/bench_csv.py [--rows 20000] [--patients 500] [--create]
                                             [--profile]

Generates a lab CSV in the Synthea observations layout (the `lab-results` mapping):
`--patients` patients loaded first with the `patients` mapping, then `--rows` lab rows
over them (CBC analytes with decimals and units, one date per patient encounter).
Each run uses a fresh SQLite store in a temporary folder. Reports rows/s for the first
load (every row a new Observation: translated, validated, indexed, with one Provenance
and one kept input per chunk of rows) and for loading the same file again (every chunk
found by its hash: nothing new). `--create` uses the built-in mapping with
`identity.write: create` (conditional creates) instead of its conditional updates.
The UCUM unit registry is loaded before timing (a running server has it loaded; a
one-off `fhir-fusion ingest csv` pays about 2-4 s for it once).
Target (2-core machine): 5,000 lab rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import random
import tempfile
import time
from pathlib import Path

from adapters.csv.ingest import ingest_csv
from adapters.pipeline import Pipeline
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

CTX = Context(caller="bench")
ANALYTES = (  # LOINC, name, unit, low, high, decimals
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 10, 18, 1),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 3, 12, 1),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 150, 400, 1),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dl", 60, 200, 0),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.5, 1.5, 2),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 130, 150, 0),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3, 5.5, 1),
    ("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", 35, 50, 1),
)


def patient_ids(count: int) -> list[str]:
    return [f"bench-{n:06d}" for n in range(count)]


def patients_csv(ids: list[str]) -> bytes:
    out = io.StringIO()
    out.write("Id,BIRTHDATE,FIRST,LAST,GENDER\n")
    for n, pid in enumerate(ids):
        out.write(f"{pid},19{50 + n % 50}-0{1 + n % 9}-1{n % 9},Given{n},Family{n},"
                  f"{'MF'[n % 2]}\n")
    return out.getvalue().encode()


def labs_csv(ids: list[str], rows: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    out = io.StringIO()
    out.write("DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE\n")
    written = 0
    visit = 0
    while written < rows:
        pid = ids[visit % len(ids)]
        when = (f"20{10 + visit % 14:02d}-{1 + visit % 12:02d}-{1 + visit % 28:02d}"
                f"T08:{visit % 60:02d}:00Z")
        for code, name, unit, low, high, decimals in ANALYTES:
            if written == rows:
                break
            value = f"{rng.uniform(low, high):.{decimals}f}"
            out.write(f'{when},{pid},enc-{visit},laboratory,{code},"{name}",{value},{unit},'
                      "numeric\n")
            written += 1
        visit += 1
    return out.getvalue().encode()


async def run(rows: int, patients: int, create: bool, profile: bool) -> None:
    from adapters.csv.mapping import BUILTIN_PACKAGE
    from search.units import canonical_unit

    canonical_unit("mg/dL")  # loads the UCUM registry
    ids = patient_ids(patients)
    data = labs_csv(ids, rows)
    with tempfile.TemporaryDirectory() as folder:
        mapping = "lab-results"
        if create:
            from importlib import resources

            text = (resources.files(BUILTIN_PACKAGE) / "mappings" / "lab-results.yaml").read_text()
            mapping = str(Path(folder) / "lab-results-create.yaml")
            Path(mapping).write_text(text.replace("write: update", "write: create"))
        store = await SQLiteStore.open(Path(folder) / "bench.db")
        try:
            pipeline = Pipeline(store)
            started = time.perf_counter()
            loaded = await ingest_csv(pipeline, CTX, patients_csv(ids), "patients")
            took = time.perf_counter() - started
            print(f"patients: {loaded.count('stored')} in {took:.2f} s "
                  f"({loaded.count('stored') / took:,.0f} rows/s)")
            profiler = cProfile.Profile() if profile else None
            started = time.perf_counter()
            if profiler:
                profiler.enable()
            first = await ingest_csv(pipeline, CTX, data, mapping)
            if profiler:
                profiler.disable()
            took = time.perf_counter() - started
            stored = first.count("stored")
            print(f"lab rows ({'conditional create' if create else 'conditional update'}), "
                  f"first load: {stored} stored, {first.count('rejected')} rejected "
                  f"in {took:.2f} s: {rows / took:,.0f} rows/s (target 5,000)")
            started = time.perf_counter()
            again = await ingest_csv(pipeline, CTX, data, mapping)
            took = time.perf_counter() - started
            print(f"lab rows, same file again: {again.count('duplicate')} duplicate in "
                  f"{took:.2f} s: {rows / took:,.0f} rows/s")
            print(f"CSV size {len(data) / 2**20:.1f} MiB; csv counters "
                  f"{(await pipeline.counters(CTX))['csv']}")
            if profiler:
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--create", action="store_true",
                        help="conditional creates (identity.write: create) instead of updates")
    parser.add_argument("--profile", action="store_true", help="cProfile the first load")
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.patients, args.create, args.profile))


if __name__ == "__main__":
    main()
