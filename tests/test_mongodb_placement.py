"""Where the MongoDB store places resources outside any Patient compartment
(review-mongo #4): each gets its own shard-key value `pc` = "~<type>/<id>" instead of
one null per tenant (a chunk MongoDB could never split), kept across updates and on its
delete marker and history; patient records keep the patient's id. Over mongomock behind
tests/mongo_async.py (no server, hence no chunks, here: the documents' fields are what
is checked)."""

from __future__ import annotations

import httpx
import pytest
from mongo_async import AsyncMockClient

from fhir_server.app import create_app
from fhir_server.storage import mongodb_documents as docs
from fhir_server.storage.base import Context
from fhir_server.storage.mongodb import MongoStore

pytestmark = pytest.mark.anyio


def _observation(observation_id: str, subject: str) -> dict[str, object]:
    return {"resourceType": "Observation", "id": observation_id, "status": "final",
            "code": {"text": "heart rate"}, "subject": {"reference": subject}}  # fmt: skip


async def test_shared_resources_get_a_value_of_their_own() -> None:
    mock = AsyncMockClient()
    store = await MongoStore.open("mongodb://mongomock/fhir", client=mock)
    ctx = Context(tenant="north")
    async with store.transaction(ctx) as txn:
        await txn.update({"resourceType": "Patient", "id": "p1"}, None)
        await txn.update({"resourceType": "Organization", "id": "org1", "name": "A"}, None)
        await txn.update({"resourceType": "Practitioner", "id": "pr1"}, None)
        await txn.update(_observation("o1", "Patient/p1"), None)
        await txn.update(_observation("o2", "Device/d1"), None)  # no Patient compartment
    raw = mock.sync["fhir"]
    placed = {doc["id"]: doc["pc"] for doc in raw[docs.RESOURCES].find({"tenant": "north"})}
    assert placed == {"p1": "p1", "org1": "~Organization/org1", "pr1": "~Practitioner/pr1",
                      "o1": "p1", "o2": "~Observation/o2"}  # fmt: skip
    async with store.transaction(ctx) as txn:
        await txn.update({"resourceType": "Organization", "id": "org1", "name": "B"}, None)
        await txn.delete("Practitioner", "pr1")
    versions = sorted((d["id"], d["version"], d["pc"]) for d in raw[docs.HISTORY].find(
        {"id": {"$in": ["org1", "pr1"]}}))  # fmt: skip
    assert versions == [("org1", 1, "~Organization/org1"), ("org1", 2, "~Organization/org1"),
                        ("pr1", 1, "~Practitioner/pr1"), ("pr1", 2, "~Practitioner/pr1")]
    assert raw[docs.RESOURCES].find_one({"id": "pr1"})["pc"] == "~Practitioner/pr1"


async def test_a_resource_moving_into_a_compartment_and_an_old_null_document() -> None:
    """An Observation whose subject becomes a Patient moves to that patient's value;
    a document written before (pc null) is found by its update and placed anew."""
    mock = AsyncMockClient()
    store = await MongoStore.open("mongodb://mongomock/fhir", client=mock)
    ctx = Context()
    async with store.transaction(ctx) as txn:
        await txn.update(_observation("o2", "Device/d1"), None)
        await txn.update({"resourceType": "Location", "id": "l1"}, None)
    raw = mock.sync["fhir"]
    raw[docs.RESOURCES].update_one({"id": "l1"}, {"$set": {"pc": None}})  # as before
    async with store.transaction(ctx) as txn:
        await txn.update(_observation("o2", "Patient/p9"), None)
        await txn.update({"resourceType": "Location", "id": "l1", "name": "Ward 3"}, None)
    assert raw[docs.RESOURCES].find_one({"id": "o2"})["pc"] == "p9"
    assert raw[docs.RESOURCES].find_one({"id": "l1"})["pc"] == "~Location/l1"


async def test_compartment_searches_do_not_match_the_placement_values() -> None:
    """pc is for sharding only: Patient/p1/Observation finds the patient's Observation,
    not one placed "~Observation/..."."""
    store = await MongoStore.open("mongodb://mongomock/fhir", client=AsyncMockClient())
    async with store.transaction(Context()) as txn:
        await txn.update({"resourceType": "Patient", "id": "p1"}, None)
        await txn.update(_observation("o1", "Patient/p1"), None)
        await txn.update(_observation("o2", "Device/d1"), None)
    transport = httpx.ASGITransport(app=create_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://fhir.test/fhir/") as c:
        found = (await c.get("Patient/p1/Observation")).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["o1"]
