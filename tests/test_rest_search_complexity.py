"""A search within the parser's size limits that still compiles to SQL SQLite will not
take (chains and _has nested four deep over every target type: "parser stack
overflow") is a 400 too-costly OperationOutcome, not a 500."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_deeply_nested_chain_and_has_is_400(client: httpx.AsyncClient) -> None:
    name = "subject._has:Observation:subject:subject._has:Observation:subject:code"
    response = await client.get("Observation", params={name: "x"})
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "too-costly"


async def test_a_shallower_chain_and_has_still_runs(client: httpx.AsyncClient) -> None:
    name = "subject._has:Observation:subject:code"
    response = await client.get("Observation", params={name: "x"})
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 0
