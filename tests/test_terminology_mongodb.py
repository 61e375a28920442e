"""On MongoDB storage (mongomock: no MongoDB server can run here) the terminology service
is absent: the token modifiers :in/:not-in/:above/:below and the operations that need the
concept store answer a clear 501, never an empty result that looks like "no match"."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from mongo_async import AsyncMockClient

from fhir_server.app import create_app
from fhir_server.storage.mongodb import MongoStore

pytestmark = pytest.mark.anyio

ICD = "http://hl7.org/fhir/sid/icd-10-cm"


@pytest.fixture
async def mongo_client() -> AsyncIterator[httpx.AsyncClient]:
    store = await MongoStore.open("mongodb://mongomock/", client=AsyncMockClient())
    transport = httpx.ASGITransport(app=create_app(store))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://fhir.test/fhir/") as c:
            obs = {"resourceType": "Observation", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}}
            assert (await c.post("Observation", json=obs)).status_code == 201
            yield c
    finally:
        await store.close()


@pytest.mark.parametrize("url", [
    "Observation?code:in=http://loinc.org/vs",
    "Observation?code:not-in=http://loinc.org/vs",
    f"Condition?code:below={ICD}|E11",
    f"Condition?code:above={ICD}|E11.9",
])  # fmt: skip
async def test_terminology_modifiers_are_501(mongo_client: httpx.AsyncClient, url: str) -> None:
    r = await mongo_client.get(url)
    assert r.status_code == 501, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "not-supported"
    assert url.split("?")[1].split("=")[0] in issue["diagnostics"]  # names the clause


@pytest.mark.parametrize("url", [
    "CodeSystem/$lookup?system=http://loinc.org&code=2345-7",
    "ValueSet/$expand?url=http://loinc.org/vs",
    "CodeSystem/$validate-code?url=http://loinc.org&code=2345-7",
])  # fmt: skip
async def test_concept_store_operations_are_501(
    mongo_client: httpx.AsyncClient, url: str
) -> None:
    r = await mongo_client.get(url)
    assert r.status_code == 501, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_plain_token_search_still_works(mongo_client: httpx.AsyncClient) -> None:
    r = await mongo_client.get("Observation?code=http://loinc.org|2345-7")
    assert r.status_code == 200 and r.json()["total"] == 1
