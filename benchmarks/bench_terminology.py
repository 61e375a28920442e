"""Terminology latency over real HTTP: $lookup, $validate-code, $expand with a type-ahead
filter on a 100,000-concept value set, and $translate; plus load times.

Builds a store in a temporary directory (or --db): a generated code system of
`--concepts` concepts (English displays from a small vocabulary, a Chinese designation on
every fifth), a ValueSet of all of it, a ConceptMap of 1,000 local codes; starts uvicorn
on 127.0.0.1 (a free port) and times each operation `--repeat` times one after the
other with httpx, printing p50/p95. The first $expand of the value set (building and
caching its member list) is timed on its own. It is not a test.

    nice .venv/bin/python benchmarks/bench_terminology.py [--concepts 100000] [--repeat 50]

Target (issue 6): the first page of a filtered $expand of a 100k-concept value set in
under 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir_server.storage.base import Context  # noqa: E402
from fhir_server.storage.sqlite import SQLiteStore  # noqa: E402
from terminology.model import CodeSystemHeader, Concept, Designation  # noqa: E402

SYSTEM = "http://example.org/fhir/CodeSystem/bench-lab"
VALUE_SET = "http://example.org/fhir/ValueSet/bench-lab-all"
# all but one concept: a member list, not a whole system (type-ahead probes each hit)
VALUE_SET_HOLED = "http://example.org/fhir/ValueSet/bench-lab-holed"
LOCAL = "urn:oid:1.2.3.4.5.6"
ANALYTES = [("Glucose", "葡萄糖"), ("Hemoglobin", "血红蛋白"), ("Creatinine", "肌酐"),
            ("Sodium", "钠"), ("Potassium", "钾"), ("Cholesterol", "胆固醇"),
            ("Albumin", "白蛋白"), ("Bilirubin", "胆红素"), ("Ferritin", "铁蛋白"),
            ("Troponin", "肌钙蛋白"), ("Lactate", "乳酸"), ("Calcium", "钙")]  # fmt: skip
PROPERTIES = ["Mass/volume", "Moles/volume", "Presence", "Enzymatic activity/volume"]
SPECIMENS = [("Serum or Plasma", "血清或血浆"), ("Blood", "血"), ("Urine", "尿"),
             ("Cerebral spinal fluid", "脑脊液")]  # fmt: skip
METHODS = ["", " by Automated count", " by Test strip", " by High sensitivity method"]
FILTERS = ["gluc ser", "hemoglobin blood", "creat urine", "troponin high", "chol",
           "sodium moles", "ferr", "lact blood test"]
CJK_FILTERS = ["葡萄糖", "血红", "尿", "胆固醇", "肌钙蛋白"]


def concepts(n: int) -> Iterator[Concept]:
    rng = random.Random(6)
    for i in range(n):
        (analyte, analyte_zh), prop = rng.choice(ANALYTES), rng.choice(PROPERTIES)
        (specimen, specimen_zh), method = rng.choice(SPECIMENS), rng.choice(METHODS)
        display = f"{analyte} [{prop}] in {specimen}{method} variant {i}"
        designations = ()
        if i % 5 == 0:
            designations = (Designation(f"{specimen_zh}{analyte_zh} 变体{i}", "zh-CN"),)
        yield Concept(f"B{i:06d}", display, designations=designations,
                      parents=(f"B{i // 100:06d}",) if i >= 100 else ())  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_factory() -> object:
    """For `uvicorn --factory`: the app on the store named by FHIR_FUSION_BENCH_DB."""
    from fhir_server.app import create_app

    path = os.environ["FHIR_FUSION_BENCH_DB"]
    return create_app(store_factory=lambda: SQLiteStore.open(path))


async def prepare(path: Path, n: int) -> None:
    from terminology import content
    from terminology.store import concept_store

    store = await SQLiteStore.open(path)
    ctx = Context()
    try:
        began = time.perf_counter()
        summary = await concept_store(store).load_code_system(
            ctx, CodeSystemHeader(SYSTEM, "1", "BenchLab", hierarchy_meaning="is-a"),
            concepts(n),
        )  # fmt: skip
        took = time.perf_counter() - began
        print(f"load {summary.concepts} concepts ({summary.designations} designations): "
              f"{took:.1f} s, {summary.concepts / took:,.0f} concepts/s")  # fmt: skip
        async with store.transaction(ctx) as txn:
            await txn.update({"resourceType": "ValueSet", "id": "bench-lab-all",
                              "url": VALUE_SET, "status": "active",
                              "compose": {"include": [{"system": SYSTEM}]}})  # fmt: skip
            await txn.update({"resourceType": "ValueSet", "id": "bench-lab-holed",
                              "url": VALUE_SET_HOLED, "status": "active",
                              "compose": {"include": [{"system": SYSTEM}], "exclude": [
                                  {"system": SYSTEM, "concept": [{"code": "B050000"}]}]}})
            await txn.update({
                "resourceType": "ConceptMap", "id": "bench-local-to-lab", "status": "active",
                "url": "http://example.org/fhir/ConceptMap/bench-local-to-lab",
                "group": [{"source": LOCAL, "target": SYSTEM, "element": [
                    {"code": f"L{i}", "target": [{"code": f"B{i:06d}",
                                                  "equivalence": "equivalent"}]}
                    for i in range(1000)]}],
            })  # fmt: skip
        for label, url in (("FHIR code system (v3-ActCode)",
                            "http://terminology.hl7.org/CodeSystem/v3-ActCode"),
                           ("LOINC subset", content.LOINC),
                           ("ICD-10-CM (simple-icd-10-cm)", content.ICD10CM)):
            began = time.perf_counter()
            await content.ensure_code_system(concept_store(store), ctx, url)
            print(f"first use, shipped {label}: {time.perf_counter() - began:.2f} s")
    finally:
        await store.close()


async def _time(client: httpx.AsyncClient, calls: list[tuple[str, dict[str, str]]]) -> str:
    times: list[float] = []
    for path, params in calls:
        began = time.perf_counter()
        response = await client.get(path, params=params)
        times.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200:
            return f"failed: {response.status_code} {response.text[:120]}"
    times.sort()
    p95 = times[max(int(len(times) * 0.95) - 1, 0)]
    return f"p50 {statistics.median(times):6.1f} ms  p95 {p95:6.1f} ms  ({len(times)} calls)"


async def run(base: str, n: int, repeat: int) -> None:
    rng = random.Random(7)
    codes = [f"B{rng.randrange(n):06d}" for _ in range(repeat)]
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        began = time.perf_counter()
        first = await client.get("ValueSet/$expand",
                                 params={"url": VALUE_SET, "filter": "gluc", "count": "20"})
        first.raise_for_status()
        print(f"$expand first call (builds and caches {n} members): "
              f"{(time.perf_counter() - began) * 1000:.0f} ms, total "
              f"{first.json()['expansion']['total']}")  # fmt: skip

        def expand(texts: list[str], url: str = VALUE_SET) -> list[tuple[str, dict[str, str]]]:
            return [("ValueSet/$expand", {"url": url, "filter": texts[i % len(texts)],
                                          "count": "20"}) for i in range(repeat)]  # fmt: skip

        began = time.perf_counter()
        (await client.get("ValueSet/$expand", params={"url": VALUE_SET_HOLED, "count": "1"})
         ).raise_for_status()
        print(f"$expand first call, value set of all but one: "
              f"{(time.perf_counter() - began) * 1000:.0f} ms")  # fmt: skip

        rows = [
            ("$lookup (CodeSystem, random code)",
             [("CodeSystem/$lookup", {"system": SYSTEM, "code": c}) for c in codes]),
            ("$validate-code (CodeSystem)",
             [("CodeSystem/$validate-code", {"url": SYSTEM, "code": c}) for c in codes]),
            ("$validate-code (ValueSet of 100k)",
             [("ValueSet/$validate-code", {"url": VALUE_SET, "system": SYSTEM, "code": c})
              for c in codes]),
            ("$expand filter (words), first 20", expand(FILTERS)),
            ("$expand filter (Chinese), first 20", expand(CJK_FILTERS)),
            ("$expand filter 'a' (most match), first 20", expand(["a"])),
            ("same, all-but-one value set: words", expand(FILTERS, VALUE_SET_HOLED)),
            ("same, all-but-one value set: Chinese", expand(CJK_FILTERS, VALUE_SET_HOLED)),
            ("same, all-but-one value set: 'a'", expand(["a"], VALUE_SET_HOLED)),
            ("$expand no filter, page at offset 50000",
             [("ValueSet/$expand", {"url": VALUE_SET, "offset": str(n // 2), "count": "20"})]
             * repeat),
            ("$translate (ConceptMap of 1,000)",
             [("ConceptMap/$translate", {"system": LOCAL, "code": f"L{rng.randrange(1000)}"})
              for _ in range(repeat)]),
            ("$lookup LOINC 2345-7 (shipped)",
             [("CodeSystem/$lookup", {"system": "http://loinc.org", "code": "2345-7"})]
             * repeat),
        ]  # fmt: skip
        for label, calls in rows:
            print(f"{label:<44} {await _time(client, calls)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--db", type=Path, help="store file to build (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench-terminology.db"
        asyncio.run(prepare(path, args.concepts))
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FHIR_FUSION_BENCH_DB": str(path)}
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "benchmarks.bench_terminology:app_factory",
             "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level",
             "warning", "--no-access-log"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}/fhir/"
            for _ in range(100):
                try:
                    httpx.get(base + "metadata", timeout=5)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            asyncio.run(run(base, args.concepts, args.repeat))
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
