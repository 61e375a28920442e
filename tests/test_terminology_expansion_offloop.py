"""A big expansion is written to the SQLite concept store off the event loop (break-new
finding 14): writing ICD-10-CM's ~98,000 members took one blocking executemany of about
half a second, during which no other client (FHIR API, MLLP, DICOM) was served. Real
SQLite file, the shipped ICD-10-CM (simple-icd-10-cm); the loop's responsiveness is
measured by a probe task that sleeps 5 ms at a time, relative to the write's duration
(so the check does not depend on the machine's speed)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore
from terminology.service import terminology_service
from terminology.store import Member

pytestmark = pytest.mark.anyio

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CTX = Context()


async def _worst_lag(stop: asyncio.Event) -> float:
    worst = 0.0
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        worst = max(worst, time.perf_counter() - started - 0.005)
    return worst


async def test_big_expansion_is_written_off_the_event_loop(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "fhir.db")
    try:
        service = terminology_service(store)
        info = await service.find_code_system(CTX, ICD10CM)
        assert info is not None
        members = [Member(cid) for cid in await service.concepts.select(CTX, info, [])]
        assert len(members) > 90_000  # chapters, blocks, categories and subcategories

        stop = asyncio.Event()
        probe = asyncio.ensure_future(_worst_lag(stop))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        expansion = await service.concepts.save_expansion(CTX, "icd-all", members)
        took = time.perf_counter() - started
        stop.set()
        worst = await probe
        # inline, the loop stalled for the whole write (worst ~ took)
        assert worst < took / 3, (worst, took)

        assert expansion.total == len(members)
        found = await service.concepts.expansion_find(CTX, expansion, ICD10CM, "E11.9")
        assert found is not None
        assert found.display == "Type 2 diabetes mellitus without complications"

        # cancelled while the worker writes: the write runs to its end, then rolls back
        task = asyncio.ensure_future(service.concepts.save_expansion(CTX, "icd-2", members))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await service.concepts.expansion(CTX, "icd-2") is None
        again = await service.concepts.save_expansion(CTX, "icd-3", members[:10])
        assert again.total == 10
        assert (await service.concepts.expansion(CTX, "icd-all")) == expansion
    finally:
        await store.close()
