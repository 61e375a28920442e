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
