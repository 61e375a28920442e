"""Content negotiation (R4 http.html#mime-type, #version-parameter): a client that asks
for application/json gets that Content-Type (the same JSON); the fhirVersion MIME
parameter must name R4 (4.0), otherwise the Accept header excludes every answer: 406."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("application/json", "application/json"),
        ("application/fhir+json", "application/fhir+json"),
        ("application/fhir+json, application/json;q=0.9", "application/fhir+json"),
        ("*/*", "application/fhir+json"),
        ("application/fhir+json;fhirVersion=4.0", "application/fhir+json"),
        ("application/json; fhirVersion=4.0", "application/json"),
    ],
)
async def test_answer_has_the_json_type_asked_for(
    client: httpx.AsyncClient, accept: str, media_type: str
) -> None:
    for path in ("Patient", "metadata", "Patient/missing"):
        response = await client.get(path, headers={"Accept": accept})
        assert response.status_code in (200, 404), response.text
        assert response.headers["content-type"].split(";")[0] == media_type, path
        assert response.json()["resourceType"]


async def test_format_application_json_overrides_accept(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "Patient", params={"_format": "application/json"},
        headers={"Accept": "application/fhir+json"},
    )
    assert response.headers["content-type"].split(";")[0] == "application/json"


@pytest.mark.parametrize(
    "accept", ["application/fhir+json;fhirVersion=5.0", "application/json; fhirVersion=3.0"]
)
async def test_other_fhir_version_is_406(client: httpx.AsyncClient, accept: str) -> None:
    response = await client.get("Patient", headers={"Accept": accept})
    assert response.status_code == 406, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/fhir+json; fhirVersion=4.0", 201),
        ("application/fhir+json;fhirVersion=4.0.1", 201),
        ("application/fhir+json; fhirVersion=5.0", 415),
        ("application/json; fhirVersion=3.0", 415),
    ],
)
async def test_body_of_another_fhir_version_is_415(
    client: httpx.AsyncClient, content_type: str, status: int
) -> None:
    """http.html#version-parameter: the server refuses a body whose Content-Type names
    a FHIR version it does not support, with 415."""
    response = await client.post(
        "Patient", content=b'{"resourceType": "Patient", "active": true}',
        headers={"Content-Type": content_type},
    )
    assert response.status_code == status, response.text
    if status == 415:
        assert "fhirVersion" in response.json()["issue"][0]["diagnostics"]


async def test_duplicate_key_is_named(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "Patient", content=b'{"resourceType": "Patient", "active": true, "active": false}',
        headers={"Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 400
    assert "'active' more than once" in response.json()["issue"][0]["diagnostics"]
