"""A path the server routes, asked with a method it does not serve there, is a 405 with
an Allow header (RFC 9110 15.5.6), not "Unknown resource type"; an operation asked at a
level where it is not served is a 404 naming where it is."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("DELETE", "metadata", {"GET", "HEAD"}),
    ("POST", "metadata", {"GET", "HEAD"}),
    ("GET", "$reindex", {"POST"}),
    ("DELETE", "$reindex/1", {"GET", "HEAD"}),
    ("GET", "Patient/$reindex", {"POST"}),
])
async def test_wrong_method_is_405_with_allow(
    client: httpx.AsyncClient, method: str, path: str, allow: set[str]
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405, response.text
    assert {m.strip() for m in response.headers["allow"].split(",")} == allow
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert method in outcome["issue"][0]["diagnostics"]


async def test_instance_level_operation_not_served_names_where_it_is(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("CodeSystem/loinc/$lookup", params={"code": "2345-7"})
    assert response.status_code == 404, response.text
    text = response.json()["issue"][0]["diagnostics"]
    assert "$lookup" in text and "CodeSystem/$lookup" in text
    unknown = await client.get("Patient/1/$nosuchop")
    assert unknown.status_code == 404
    assert "$nosuchop" in unknown.json()["issue"][0]["diagnostics"]


async def test_unknown_type_is_still_404(client: httpx.AsyncClient) -> None:
    response = await client.get("Patients")
    assert response.status_code == 404
    assert "Unknown resource type" in response.json()["issue"][0]["diagnostics"]
