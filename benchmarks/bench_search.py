"""Search latency on a generated store (benchmarks/generate_data.py), over real HTTP.

Starts uvicorn on create_app over the store file (127.0.0.1, a free port), runs each
query `--repeat` times one after the other with httpx, and prints p50/p95 per query,
the number of matches, and the server process's memory (VmRSS now, VmHWM peak).
Queries the server answers with 400 "not supported" are listed as such: the benchmark
uses whatever search features exist when it runs. It is not a test.

    .venv/bin/python benchmarks/bench_search.py --db /tmp/bench.db [--repeat 30]
    .venv/bin/python benchmarks/bench_search.py --store mongodb://127.0.0.1:27017/bench

Targets (issue 3, 1M resources, 2 cores): selective token/date/reference p95 < 30 ms;
a page of 100 with _include < 150 ms; page 1,000 no slower than page 1; RSS < 500 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
LOINC = "http://loinc.org"

# deep paging without counting all matches on every page, as a paging client would
PAGING = {"_count": "20", "_total": "none"}
Case = tuple[str, str, dict[str, str] | list[tuple[str, str]]]


def app_factory() -> object:
    """For `uvicorn --factory`: the app on the store named by FHIR_FUSION_BENCH_DB."""
    from fhir_server.app import create_app
    from fhir_server.storage.mongodb import MongoStore
    from fhir_server.storage.sqlite import SQLiteStore

    url = os.environ.get("FHIR_FUSION_BENCH_STORE")
    if url:
        return create_app(store_factory=lambda: MongoStore.open(url))
    path = os.environ["FHIR_FUSION_BENCH_DB"]
    return create_app(store_factory=lambda: SQLiteStore.open(path))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _memory(pid: int) -> str:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return f"VmRSS {fields.get('VmRSS', '?')}, peak VmHWM {fields.get('VmHWM', '?')}"


def cases(patients: int, organizations: int) -> list[Case]:
    """The queries, on targets that exist in every generated store."""
    pid = f"pat-{patients // 2:07d}"
    org_name = f"Zürich General Hospital {1 % organizations}"
    return [
        ("token: identifier", "Patient", {"identifier": f"urn:oid:2.16.840.1.113883.19.5|"
                                          f"MRN{patients // 3:07d}"}),
        ("token: code + subject", "Observation", {"code": f"{LOINC}|718-7",
                                                  "subject": f"Patient/{pid}"}),
        ("token: code, page of 20", "Observation", {"code": f"{LOINC}|4548-4"}),
        ("reference: subject", "Observation", {"subject": f"Patient/{pid}"}),
        ("string: family=müller", "Patient", {"family": "müller", "_count": "20"}),
        ("string: name=王芳", "Patient", {"name": "王芳", "_count": "20"}),
        ("date: one day (Encounter)", "Encounter", [("date", "ge2020-03-01"),
                                                    ("date", "lt2020-03-02")]),
        ("date: subject + year", "Observation", [("subject", f"Patient/{pid}"),
                                                 ("date", "2020")]),
        ("quantity: HbA1c > 8 %", "Observation",
         {"code": f"{LOINC}|4548-4", "value-quantity": "gt8|http://unitsofmeasure.org|%"}),
        ("quantity: 1 g/L = 100 mg/dL", "Observation",
         {"value-quantity": "ap1|http://unitsofmeasure.org|g/L", "code": f"{LOINC}|2345-7"}),
        ("chain: encounter.service-provider.name", "Observation",
         {"encounter.service-provider.name": org_name, "code": f"{LOINC}|718-7"}),
        ("_has: Condition code (hypertension)", "Patient",
         {"_has:Condition:subject:code": "38341003"}),
        ("_include subject, page of 100", "Observation",
         {"code": f"{LOINC}|718-7", "_include": "Observation:subject", "_count": "100"}),
        ("_sort=-date, page of 20", "Observation", {"code": f"{LOINC}|718-7", "_sort": "-date"}),
        ("_text: hypertension", "Condition", {"_text": "hypertension", "_count": "20"}),
        ("_text: 王芳 (Patient)", "Patient", {"_text": "王芳", "_count": "20"}),
        ("_content: metformin", "Condition", {"_content": "metformin", "_count": "20"}),
    ] + [
        # the slow ones above again, counting less: the page alone (none), and a cheap
        # estimate where the exact count is expensive (estimate)
        (f"{label}, _total={mode}", rtype, {**dict(params), "_total": mode})
        for label, rtype, params in [
            ("token: code 718-7, page of 20", "Observation", {"code": f"{LOINC}|718-7"}),
            ("chain: encounter.service-provider.name", "Observation",
             {"encounter.service-provider.name": org_name, "code": f"{LOINC}|718-7"}),
            ("_has: Condition code", "Patient", {"_has:Condition:subject:code": "38341003"}),
            ("_sort=-date", "Observation", {"code": f"{LOINC}|718-7", "_sort": "-date"}),
        ]
        for mode in ("estimate", "none")
    ]


async def _time(client: httpx.AsyncClient, url: str, params: object, repeat: int) -> dict:
    times: list[float] = []
    response = await client.get(url, params=params)  # warm-up, and the answer shown
    if response.status_code != 200:
        issue = response.json().get("issue", [{}])[0] if response.content else {}
        return {"error": f"{response.status_code} {issue.get('diagnostics', '')}"[:90]}
    bundle = response.json()
    for _ in range(repeat):
        began = time.perf_counter()
        response = await client.get(url, params=params)
        times.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
    times.sort()
    return {
        "p50": statistics.median(times),
        "p95": times[max(int(len(times) * 0.95) - 1, 0)],
        "total": bundle.get("total"),
        "entries": len(bundle.get("entry", [])),
        "bundle": bundle,
    }


async def _deep_page(client: httpx.AsyncClient, base: str, page: int) -> str | None:
    """The URL of page `page` of Observation?PAGING, reached by following next links
    (what a client does; the server decides whether that is an offset or a cursor)."""
    response = await client.get(f"{base}/Observation", params=PAGING)
    for _ in range(page - 1):
        links = {link["relation"]: link["url"] for link in response.json().get("link", [])}
        if "next" not in links:
            return None
        response = await client.get(links["next"])
    return str(response.url)


def _row(label: str, result: dict) -> str:
    if "error" in result:
        return f"{label:<42} not supported/failed: {result['error']}"
    total = "" if result["total"] is None else result["total"]
    return (
        f"{label:<42} p50 {result['p50']:7.1f} ms  p95 {result['p95']:7.1f} ms  "
        f"entries {result['entries']:>4}  total {total}"
    )


async def run(base: str, repeat: int, pid: int) -> None:
    async with httpx.AsyncClient(timeout=120) as client:
        counts = {}
        for rtype in ("Patient", "Organization", "Observation"):
            response = await client.get(f"{base}/{rtype}", params={"_summary": "count"})
            if response.status_code != 200 or response.json().get("total") is None:
                response = await client.get(f"{base}/{rtype}", params={"_count": "0"})
            counts[rtype] = response.json().get("total") or 0
        print(f"store: {counts}")
        print(f"server memory after start: {_memory(pid)}")
        for label, rtype, params in cases(counts["Patient"], counts["Organization"]):
            result = await _time(client, f"{base}/{rtype}", params, repeat)
            if label.startswith("_include") and "bundle" in result:
                included = sum(
                    1 for e in result["bundle"].get("entry", [])
                    if e.get("search", {}).get("mode") == "include"
                )
                label = f"{label} (+{included} incl.)"
            print(_row(label, result))

        page_one = await _time(client, f"{base}/Observation", PAGING, repeat)
        print(_row("paging: page 1 (_count=20, _total=none)", page_one))
        began = time.perf_counter()
        url = await _deep_page(client, base, 1000)
        walk = time.perf_counter() - began
        if url is None:
            print("paging: page 1,000 not reached (no next link)")
        else:
            split = urlsplit(url)
            deep = await _time(client, f"{base}{split.path[len(urlsplit(base).path):]}",
                               httpx.QueryParams(split.query), repeat)
            print(_row("paging: page 1,000 (its next-link URL)", deep))
            print(f"  (walking 999 next links took {walk:.1f} s)")
        print(f"server memory after the run: {_memory(pid)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, help="a generated store file")
    parser.add_argument("--store", metavar="URL",
                        help="a MongoDB database filled by generate_data.py --store, instead "
                             "of --db; an unreachable one skips the benchmark")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per query")
    parser.add_argument("--search-index", metavar="URL", default=None,
                        help="also rebuild this Elasticsearch index from --db and time the "
                        "_text/_content cases on it (benchmarks/bench_search_index.py)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.store:
        _check_mongodb(args.store)
        env["FHIR_FUSION_BENCH_STORE"] = args.store
    elif args.db is None or not args.db.exists():
        raise SystemExit(f"{args.db} does not exist; run benchmarks/generate_data.py first")
    else:
        env["FHIR_FUSION_BENCH_DB"] = str(args.db)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.bench_search:app_factory", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        asyncio.run(_wait_ready(base, process))
        asyncio.run(run(base, args.repeat, process.pid))
        if args.search_index:
            from bench_search_index import cluster_figures

            asyncio.run(cluster_figures(args.db, args.search_index, args.repeat, cases(1, 1)))
    finally:
        process.terminate()
        process.wait(timeout=30)


def _check_mongodb(url: str) -> None:
    """Skip (exit 0 with a message) when the MongoDB server does not answer."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.stores import open_store

    async def probe() -> None:
        store = await open_store(url, Path("unused"))
        await store.close()

    asyncio.run(probe())


async def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with status {process.returncode}")
            try:
                if (await client.get(f"{base}/metadata")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not answer within 60 s")


if __name__ == "__main__":
    main()
