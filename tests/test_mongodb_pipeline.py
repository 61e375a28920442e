"""The ingest pipeline (adapters/pipeline.py) on the MongoDB store, through mongomock:
real HL7v2 samples stored with their raw input and Provenance in one transaction,
duplicates recognised, the same patient found again by its identity key (a
conditional create), a bad message kept as rejected."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from storage_backends import BACKENDS, close_backend, open_backend

from adapters.pipeline import Pipeline
from fhir_server.storage.base import Context

pytestmark = pytest.mark.anyio

HL7 = Path(__file__).resolve().parents[2] / "shared" / "samples" / "hl7v2"
CTX = Context()
MONGO_BACKENDS = [p for p in BACKENDS if p.id != "sqlite"]


@pytest.fixture(params=MONGO_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    opened, token = await open_backend(request.param, tmp_path)
    try:
        yield opened
    finally:
        await close_backend(opened, token)


def _locations(response: dict[str, Any], resource_type: str) -> list[str]:
    return [
        e["response"]["location"].split("/")[1] for e in response["entry"]
        if e["response"]["location"].startswith(resource_type + "/")
    ]


async def test_an_oru_is_stored_with_its_raw_input_and_provenance(store: Any) -> None:
    raw = (HL7 / "fhirconverter_LAB-ORU-1.hl7").read_bytes()
    result = await Pipeline(store).ingest(CTX, "hl7v2", raw)
    assert result.status == "stored", result.reason
    kept = await store.get_input(CTX, result.input_id)
    assert kept.status == "stored" and kept.content == raw
    (provenance,) = _locations(result.response, "Provenance")
    assert (await store.read(CTX, "Provenance", provenance)).version == 1
    observations = _locations(result.response, "Observation")
    assert observations
    again = await Pipeline(store).ingest(CTX, "hl7v2", raw)
    assert again.status == "duplicate" and again.input_id == result.input_id


async def test_the_same_patient_in_two_messages_is_one_patient(store: Any) -> None:
    raw = (HL7 / "fhirconverter_ADT01-28.hl7").read_bytes()
    pipeline = Pipeline(store)
    first = await pipeline.ingest(CTX, "hl7v2", raw)
    update = raw.replace(b"ADT^A01^ADT_A01|MSG00001", b"ADT^A08^ADT_A01|MSG00002")
    second, third = await asyncio.gather(
        pipeline.ingest(CTX, "hl7v2", update),
        pipeline.ingest(CTX, "hl7v2", update.replace(b"|MSG00002", b"|MSG00003")),
    )
    assert (first.status, second.status, third.status) == ("stored",) * 3
    patients = {*_locations(first.response, "Patient"), *_locations(second.response, "Patient"),
                *_locations(third.response, "Patient")}
    assert len(patients) == 1
    assert (await store.history(CTX, "Patient"))[1] == 1


async def test_an_unsupported_message_is_kept_as_rejected(store: Any) -> None:
    raw = b"MSH|^~\\&|LAB|HOSP|||20260101120000||ZZZ^Z99|CTRL1|P|2.5\rPID|1||123\r"
    result = await Pipeline(store).ingest(CTX, "hl7v2", raw)
    assert result.status == "rejected"
    (kept,) = await store.list_inputs(CTX, status="rejected")
    assert kept.id == result.input_id and kept.reason
    assert (await store.feed_counters(CTX))["hl7v2"]["pending"] == 1
