"""Transactions over HTTP on the MongoDB store: what other requests see of a Bundle
before it commits, and after it fails (its last entry invalid, or the database gone
mid-way). On mongomock through tests/mongo_async.py, whose transactions keep their
writes in private copies until commit; on a real server when FHIR_FUSION_TEST_MONGODB
is set (the outage is only emulated on mongomock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from storage_backends import REAL_MONGODB, close_backend, emulated_outage, open_backend

from fhir_server.app import create_app
from fhir_server.storage import mongodb_documents as docs
from fhir_server.storage.base import StoredResource
from fhir_server.storage.mongodb import MongoStore, MongoTransaction

pytestmark = pytest.mark.anyio

BASE = "http://fhir.test/fhir"


@pytest.fixture
async def mongo(tmp_path: Path) -> AsyncIterator[MongoStore]:
    opened, token = await open_backend("mongodb" if REAL_MONGODB else "mongomock", tmp_path)
    try:
        yield opened
    finally:
        await close_backend(opened, token)


@pytest.fixture
async def http(mongo: MongoStore) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(mongo))
    async with httpx.AsyncClient(transport=transport, base_url=f"{BASE}/") as client:
        yield client


def _put(resource: dict[str, Any]) -> dict[str, Any]:
    url = f"{resource['resourceType']}/{resource['id']}"
    return {"fullUrl": f"{BASE}/{url}", "resource": resource,
            "request": {"method": "PUT", "url": url}}


def _transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


PATIENT = {"resourceType": "Patient", "id": "tx-p", "gender": "female",
           "identifier": [{"system": "urn:mrn", "value": "tx-1"}]}
OBSERVATION = {"resourceType": "Observation", "id": "tx-o", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
               "subject": {"reference": "Patient/tx-p"}}
ENCOUNTER = {"resourceType": "Encounter", "id": "tx-e", "status": "finished",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                       "code": "AMB"},
             "subject": {"reference": "Patient/tx-p"}}


async def _nothing_visible(http: httpx.AsyncClient) -> None:
    """No request sees any of the Bundle: reads, searches, history."""
    for url in ("Patient/tx-p", "Observation/tx-o", "Encounter/tx-e"):
        assert (await http.get(url)).status_code == 404, url
    for url in ("Patient?identifier=urn:mrn|tx-1", "Observation?subject=Patient/tx-p",
                "Encounter", "_history"):
        answer = await http.get(url)
        assert answer.status_code == 200 and answer.json()["total"] == 0, url


def _raw_counts(mongo: MongoStore) -> list[int]:
    """Documents in the shared collections (mongomock only; the real server has none)."""
    raw = emulated_outage(mongo)
    assert raw is not None
    database = raw.sync[mongo.db.name]
    return [database[name].count_documents({}) for name in (docs.RESOURCES, docs.HISTORY)]


async def test_a_transaction_whose_last_entry_is_invalid_leaves_nothing(
    mongo: MongoStore, http: httpx.AsyncClient
) -> None:
    bad = {"resourceType": "Patient", "id": "tx-bad", "birthDate": "1974-13-45"}
    response = await http.post(BASE, json=_transaction(
        _put(PATIENT), _put(OBSERVATION), _put(ENCOUNTER), _put(bad)))
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[3].resource.birthDate"]
    await _nothing_visible(http)
    assert (await http.get("Patient/tx-bad")).status_code == 404
    if emulated_outage(mongo) is not None:
        assert _raw_counts(mongo) == [0, 0]


async def test_an_open_bundle_is_invisible_then_an_outage_is_503_and_the_server_recovers(
    mongo: MongoStore, http: httpx.AsyncClient
) -> None:
    """The Bundle stops after its second resource write (a write hook, inside the
    transaction) while other requests look; then the database goes away (mongomock's
    fail_after) and the Bundle is a 503 OperationOutcome; nothing of it is visible;
    once the database is back, the same Bundle goes through. On a real server there is
    no outage switch: the Bundle commits and becomes visible."""
    paused, resume = asyncio.Event(), asyncio.Event()
    written: list[str] = []

    async def pause_after_two(txn: MongoTransaction, stored: StoredResource) -> None:
        written.append(f"{stored.resource_type}/{stored.id}")
        if len(written) == 2:
            paused.set()
            await resume.wait()

    bundle = _transaction(_put(PATIENT), _put(OBSERVATION), _put(ENCOUNTER))
    mongo.write_hooks.append(pause_after_two)
    sent = asyncio.create_task(http.post(BASE, json=bundle))
    await paused.wait()
    await _nothing_visible(http)
    outage = emulated_outage(mongo)
    if outage is not None:
        assert _raw_counts(mongo) == [0, 0]
        outage.fail_after(0)
    resume.set()
    response = await sent
    mongo.write_hooks.remove(pause_after_two)
    if outage is None:
        assert response.status_code == 200, response.text
        assert (await http.get("Encounter/tx-e")).status_code == 200
        return
    assert response.status_code == 503, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"
    assert "MongoDB database is unavailable" in outcome["issue"][0]["diagnostics"]
    assert (await http.get("Patient/tx-p")).status_code == 503  # still away
    outage.down = False
    await _nothing_visible(http)
    assert _raw_counts(mongo) == [0, 0]
    again = await http.post(BASE, json=bundle)
    assert again.status_code == 200, again.text
    assert [e["response"]["status"][:3] for e in again.json()["entry"]] == ["201"] * 3
    found = await http.get("Observation?subject=Patient/tx-p")
    assert [e["resource"]["id"] for e in found.json()["entry"]] == ["tx-o"]
    assert _raw_counts(mongo) == [3, 3]
