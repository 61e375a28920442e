"""Parse rate and memory of the terminology loaders (terminology/loaders/), on generated
files in the official layouts.

    .venv/bin/python benchmarks/bench_loaders.py [--rows 100000]

Writes a Loinc.csv of `--rows` terms and an ICD-10 ClaML file of `--rows` categories in
a temporary folder, then reports for each loader the rows parsed per second (no store)
and, in a second pass under tracemalloc, the peak memory the parse allocates. Loading
into the concept store is measured by `fhir-fusion terminology load` itself (its summary
prints concepts/s).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from terminology.loaders import Loaded
from terminology.loaders.claml import load_icd10
from terminology.loaders.loinc import REQUIRED, load_loinc


def write_loinc(path: Path, rows: int) -> None:
    columns = [*REQUIRED, "SHORTNAME", "CLASSTYPE", "EXAMPLE_UCUM_UNITS", "RELATEDNAMES2"]
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, quoting=csv.QUOTE_ALL)
        out.writerow(columns)
        for n in range(rows):
            out.writerow([f"{n}-0", "Glucose", "MCnc", "Pt", "Ser/Plas", "Qn", "", "CHEM",
                          "Glucose [Mass/volume] in Serum or Plasma", "ACTIVE",
                          "Glucose SerPl-mCnc", "1", "mg/dL", "Glu; Gluc; Glucose; " * 10])


def write_claml(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<ClaML version="2.0.0">\n'
                '<Title name="ICD-10" version="2019" xml:lang="en">ICD-10</Title>\n'
                '<Class code="IV" kind="chapter"><Rubric kind="preferred"><Label '
                'xml:lang="en">Endocrine, nutritional and metabolic diseases</Label>'
                '</Rubric></Class>\n')
        for n in range(rows):
            f.write(f'<Class code="E{n}" kind="category"><SuperClass code="IV"/>'
                    '<Rubric kind="preferred"><Label xml:lang="en">Type 2 diabetes mellitus'
                    '</Label></Rubric><Rubric kind="inclusion"><Label xml:lang="en">'
                    'Diabetes (mellitus)(nonobese)(obese): adult-onset</Label></Rubric>'
                    '</Class>\n')
        f.write("</ClaML>\n")


def measure(name: str, load: Callable[[], Loaded]) -> None:
    started = time.perf_counter()
    count = sum(1 for _ in load().concepts)
    rate = count / (time.perf_counter() - started)
    tracemalloc.start()
    sum(1 for _ in load().concepts)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{name}: {count:,} concepts, {rate:,.0f} concepts/s, "
          f"peak {peak / 1e6:.1f} MB allocated while parsing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        loinc, claml = Path(folder) / "Loinc.csv", Path(folder) / "icd10.xml"
        write_loinc(loinc, args.rows)
        write_claml(claml, args.rows)
        measure("LOINC CSV", lambda: load_loinc(loinc))
        measure("ICD-10 ClaML", lambda: load_icd10(claml))


if __name__ == "__main__":
    main()
