"""Throughput and latency of the FHIR REST API over real HTTP.

Starts `fhir-fusion serve` (uvicorn, 127.0.0.1, a free port, a temporary data
directory, MLLP off) in a subprocess, then measures create, read, search and a
transaction Bundle (a Patient and three Observations) with httpx: sequentially, and
with a few concurrent clients. Prints a table of requests/s and p50/p95 latency.

    .venv/bin/python benchmarks/bench_rest.py [--requests 500] [--clients 4]

`--app-factory` starts uvicorn on create_app directly instead of the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": "BENCH-0"}],
    "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
    "gender": "male",
    "birthDate": "1974-12-25",
}


def transaction_bundle(n: int) -> dict[str, object]:
    """A Patient and three Observations referring to it by urn:uuid, as a feed sends."""
    urn = f"urn:uuid:00000000-0000-4000-8000-{n:012d}"
    patient = {**PATIENT, "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5",
                                          "value": f"TXN-{n}"}]}
    entries: list[dict[str, object]] = [
        {"fullUrl": urn, "resource": patient, "request": {"method": "POST", "url": "Patient"}}
    ]
    for code, value in (("2345-7", 5.4), ("2951-2", 140), ("2823-3", 4.1)):
        entries.append({"resource": {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": urn},
            "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org"},
        }, "request": {"method": "POST", "url": "Observation"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_factory() -> object:
    """For `uvicorn --factory`: the app on the store named by FHIR_FUSION_BENCH_DB."""
    from fhir_server.app import create_app
    from fhir_server.storage.sqlite import SQLiteStore

    path = os.environ["FHIR_FUSION_BENCH_DB"]
    return create_app(store_factory=lambda: SQLiteStore.open(path))


def start_server(port: int, data_dir: Path, use_factory: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if use_factory:
        env["FHIR_FUSION_BENCH_DB"] = str(data_dir / "bench.db")
        command = [sys.executable, "-m", "uvicorn", "benchmarks.bench_rest:app_factory",
                   "--factory", "--host", "127.0.0.1", "--port", str(port),
                   "--log-level", "warning", "--no-access-log"]
    else:
        command = [sys.executable, "-m", "fhir_server.cli", "serve", "--host", "127.0.0.1",
                   "--port", str(port), "--mllp-port", "0", "--dicom-port", "0",
                   "--data-dir", str(data_dir),
                   "--log-level", "warning"]
    return subprocess.Popen(command, cwd=ROOT, env=env)


async def wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with status {process.returncode}")
            try:
                if (await client.get(f"{base}/metadata")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not answer within 30 s")


Call = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def measure(base: str, call: Call, requests: int, clients: int) -> tuple[float, list[float]]:
    """Run `requests` calls over `clients` connections; (seconds, latencies in ms)."""
    latencies: list[float] = []
    per_client = max(requests // clients, 1)

    async def worker(start: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for n in range(start, start + per_client):
                began = time.perf_counter()
                response = await call(client, n)
                latencies.append((time.perf_counter() - began) * 1000)
                if response.status_code >= 300:
                    raise RuntimeError(f"request failed with {response.status_code}")

    began = time.perf_counter()
    await asyncio.gather(*(worker(c * per_client) for c in range(clients)))
    return time.perf_counter() - began, latencies


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


async def run(base: str, requests: int, clients: int) -> list[tuple[str, int, float, float, float]]:
    headers = {"Content-Type": "application/fhir+json"}
    ids: list[str] = []

    async def create(client: httpx.AsyncClient, n: int) -> httpx.Response:
        body = {**PATIENT, "identifier": [{"system": PATIENT["identifier"][0]["system"],
                                           "value": f"BENCH-{n}"}]}
        response = await client.post("Patient", json=body,
                                     headers={**headers, "Prefer": "return=minimal"})
        ids.append(response.headers["location"].split("/")[-3])
        return response

    async def read(client: httpx.AsyncClient, n: int) -> httpx.Response:
        return await client.get(f"Patient/{ids[n % len(ids)]}")

    async def search(client: httpx.AsyncClient, n: int) -> httpx.Response:
        return await client.get(
            "Patient", params={"identifier": f"urn:oid:2.16.840.1.113883.19.5|BENCH-{n % len(ids)}"}
        )

    async def transaction(client: httpx.AsyncClient, n: int) -> httpx.Response:
        base_url = str(client.base_url).rstrip("/")  # [base] itself, not [base]/
        return await client.post(base_url, json=transaction_bundle(n), headers=headers)

    rows = []
    calls = (("create", create), ("read", read), ("search", search),
             ("txn(1+3)", transaction))
    for label, call in calls:
        for concurrency in (1, clients):
            seconds, latencies = await measure(base, call, requests, concurrency)
            rows.append((label, concurrency, len(latencies) / seconds,
                         statistics.median(latencies), percentile(latencies, 0.95)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--app-factory", action="store_true",
                        help="run uvicorn on create_app instead of `fhir-fusion serve`")
    args = parser.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fhir-fusion-bench-") as tmp:
        process = start_server(port, Path(tmp), args.app_factory)
        base = f"http://127.0.0.1:{port}/fhir/"
        try:
            asyncio.run(wait_ready(base.rstrip("/"), process))
            rows = asyncio.run(run(base, args.requests, args.clients))
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    print(f"{'operation':<10}{'clients':>8}{'req/s':>10}{'p50 ms':>10}{'p95 ms':>10}")
    for label, clients, rate, p50, p95 in rows:
        print(f"{label:<10}{clients:>8}{rate:>10.0f}{p50:>10.2f}{p95:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
