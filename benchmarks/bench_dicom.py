"""C-STORE throughput: a real pynetdicom SCU sends small CT instances over loopback to
the DICOM listener, which keeps each file (fsynced), updates its ImagingStudy and
commits before answering.

    .venv/bin/python benchmarks/bench_dicom.py [--instances 1000] [--per-study 100]
        [--associations 1] [--profile]

The instances are pydicom_CT_small.dcm (39 KB, 128x128 CT) from the shared samples,
made distinct in memory: a new SOP Instance UID each, a new Study and Series Instance
UID every `per-study` instances, so each C-STORE merges one instance into a growing
ImagingStudy. Each run uses a fresh SQLite store in a temporary folder and only
127.0.0.1. Target (2-core machine): 100 instances/s.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import copy
import io
import pstats
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from adapters.dicom.scp import start_dicom_listener
from adapters.pipeline import Pipeline
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

CTX = Context(caller="bench")
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "samples" / "dicom" / \
    "pydicom_CT_small.dcm"


def instances(count: int, per_study: int) -> list[Dataset]:
    base = pydicom.dcmread(SAMPLE)
    made: list[Dataset] = []
    study = series = ""
    for n in range(count):
        if n % per_study == 0:
            study, series = generate_uid(), generate_uid()
        ds = copy.deepcopy(base)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n % per_study + 1
        made.append(ds)
    return made


def _no_delay(event: Any) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def send(port: int, batch: list[Path], syntax: str, failures: list[int]) -> None:
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(CTImageStorage, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="FHIRFUSION",
                         evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)])
    if not assoc.is_established:
        raise SystemExit("the association was not accepted")
    for path in batch:
        status = assoc.send_c_store(path)
        if getattr(status, "Status", None) != 0x0000:
            failures.append(int(getattr(status, "Status", -1)))
    assoc.release()


async def bench(folder: Path, datasets: list[Dataset], associations: int) -> float:
    # the SCU sends files as they are encoded (STORE_SEND_CHUNKED_DATASET), so that its
    # own encoding does not take CPU from the server on the same machine
    outbox = folder / "scu"
    outbox.mkdir()
    paths = []
    for n, ds in enumerate(datasets):
        paths.append(outbox / f"{n:06d}.dcm")
        paths[-1].write_bytes(_encoded(ds))
    syntax = str(datasets[0].file_meta.TransferSyntaxUID)
    _config.STORE_SEND_CHUNKED_DATASET = True
    store = await SQLiteStore.open(folder / "bench.sqlite3")
    listener = start_dicom_listener(Pipeline(store), CTX, "127.0.0.1", 0)
    failures: list[int] = []
    try:
        share = (len(paths) + associations - 1) // associations
        # consecutive runs of instances per association, as modalities send studies
        batches = [paths[i:i + share] for i in range(0, len(paths), share)]
        started = time.perf_counter()
        threads = [threading.Thread(target=send, args=(listener.port, b, syntax, failures))
                   for b in batches]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.to_thread(listener.stop)
        await store.close()
    if failures:
        raise SystemExit(f"{len(failures)} C-STORE failures, e.g. status 0x{failures[0]:04X}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--per-study", type=int, default=100)
    parser.add_argument("--associations", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile the listener side")
    args = parser.parse_args()
    datasets = instances(args.instances, args.per_study)
    size = len(_encoded(datasets[0]))
    print(f"{args.instances} CT instances of {size // 1024} KB, {args.per_study} per study, "
          f"{args.associations} association(s), C-STORE over 127.0.0.1")
    with tempfile.TemporaryDirectory() as tmp:
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        elapsed = asyncio.run(bench(Path(tmp), datasets, args.associations))
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    rate = args.instances / elapsed
    print(f"C-STORE with ImagingStudy update: {rate:.0f} instances/s "
          f"({elapsed:.1f} s, {1000 * elapsed / args.instances:.1f} ms per instance)")


def _encoded(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


if __name__ == "__main__":
    main()
