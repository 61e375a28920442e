"""A custom SearchParameter that a $reindex has made searchable is listed in the
CapabilityStatement (rest.resource.searchParam), as /metadata lists what the server
supports; a pending or deleted one is not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from search import custom

pytestmark = pytest.mark.anyio

MAIDEN = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
PARAMETER: dict[str, Any] = {
    "resourceType": "SearchParameter", "id": "mothers-maiden",
    "url": "http://example.org/fhir/SearchParameter/mothers-maiden",
    "name": "mothersMaiden", "status": "active", "description": "Mother's maiden name",
    "code": "mothers-maiden", "base": ["Patient"], "type": "string",
    "expression": f"Patient.extension.where(url='{MAIDEN}').value",
}


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    custom.REGISTRY.replace_all([])  # the registry is per process
    yield
    custom.REGISTRY.replace_all([])


async def _listed(client: httpx.AsyncClient) -> list[dict[str, str]]:
    response = await client.get("metadata")
    assert response.status_code == 200
    patient = next(r for r in response.json()["rest"][0]["resource"] if r["type"] == "Patient")
    return [p for p in patient["searchParam"] if p["name"] == "mothers-maiden"]


async def test_reindexed_custom_parameter_is_listed(client: httpx.AsyncClient) -> None:
    assert await _listed(client) == []
    created = await client.put("SearchParameter/mothers-maiden", json=PARAMETER)
    assert created.status_code == 201, created.text
    assert await _listed(client) == []  # pending: searching it is still refused
    started = await client.post("$reindex", params={"type": "Patient"})
    assert started.status_code == 202
    for _ in range(300):
        status = await client.get(started.headers["content-location"])
        if status.status_code != 202:
            break
        await asyncio.sleep(0.01)
    assert await _listed(client) == [{"name": "mothers-maiden", "type": "string",
                                      "definition": PARAMETER["url"]}]
    assert (await client.delete("SearchParameter/mothers-maiden")).status_code == 204
    assert await _listed(client) == []
