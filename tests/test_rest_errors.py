"""Every bad request is a 4xx with an OperationOutcome; nothing a client sends is a 500."""

from __future__ import annotations

import logging
import random

import httpx
import pytest
from rest_examples import patient

pytestmark = pytest.mark.anyio

JSON = {"Content-Type": "application/fhir+json"}


def issue(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    return body["issue"][0]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b'{"resourceType": "Patient",', "structure", id="truncated"),
        pytest.param(b"", "structure", id="empty"),
        pytest.param(b"\xff\xfe{}", "structure", id="not-utf8"),
        pytest.param(b"[1, 2]", "structure", id="array"),
        pytest.param(b'"Patient"', "structure", id="string"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "structure", id="deeply-nested"),
    ],
)
async def test_malformed_bodies_are_400(client: httpx.AsyncClient, body: bytes, code: str) -> None:
    response = await client.post("Patient", content=body, headers=JSON)
    assert response.status_code == 400
    assert issue(response)["code"] == code


async def test_wrong_resource_type_for_the_endpoint_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("Patient", json={"resourceType": "Observation"})
    assert response.status_code == 400
    assert issue(response)["expression"] == ["resourceType"]


async def test_unknown_element_is_400_with_its_path(client: httpx.AsyncClient) -> None:
    response = await client.post("Patient", json=patient(favouriteColour="blue"))
    assert response.status_code == 400
    found = issue(response)
    assert found["code"] == "structure"
    assert found["expression"] == ["Patient.favouriteColour"]


async def test_invalid_value_is_400_with_its_path(client: httpx.AsyncClient) -> None:
    response = await client.post("Patient", json=patient(birthDate="25/12/1974"))
    assert response.status_code == 400
    assert issue(response)["expression"] == ["Patient.birthDate"]
    assert "25/12/1974" not in response.text  # patient data is not echoed


@pytest.mark.parametrize(
    ("url", "body_id", "expression"),
    [
        pytest.param("Patient/example", None, "Patient.id", id="id-missing"),
        pytest.param("Patient/example", "other", "Patient.id", id="id-mismatch"),
    ],
)
async def test_put_needs_the_url_id_in_the_body(
    client: httpx.AsyncClient, url: str, body_id: str | None, expression: str
) -> None:
    resource = patient()
    if body_id is None:
        del resource["id"]
    else:
        resource["id"] = body_id
    response = await client.put(url, json=resource)
    assert response.status_code == 400
    assert issue(response)["expression"] == [expression]


async def test_invalid_id_in_the_url_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put("Patient/no_underscores", json=patient(id="no_underscores"))
    assert response.status_code == 400
    assert issue(response)["code"] == "invalid"


async def test_unknown_resource_type_is_404(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("Unicorn/1"),
        await client.post("Unicorn", json={"resourceType": "Unicorn"}),
        await client.get("Unicorn"),
    ):
        assert response.status_code == 404
        assert issue(response)["diagnostics"] == "Unknown resource type Unicorn"


async def test_unknown_path_and_method_are_outcomes(client: httpx.AsyncClient) -> None:
    nowhere = await client.get("Patient/1/_history/1/extra")
    assert nowhere.status_code == 404
    assert issue(nowhere)["code"] == "not-found"
    patch = await client.patch("Patient", json=[])
    assert patch.status_code == 405
    assert issue(patch)["code"] == "not-supported"


@pytest.mark.parametrize(
    ("method", "url", "headers"),
    [
        pytest.param("POST", "Patient", {"Content-Type": "application/fhir+xml"}, id="xml-body"),
        pytest.param("POST", "Patient", {"Content-Type": "text/plain"}, id="text-body"),
        pytest.param("GET", "Patient/1?_format=xml", {}, id="format-xml"),
        pytest.param("GET", "metadata?_format=application/fhir%2Bxml", {}, id="format-fhir-xml"),
    ],
)
async def test_xml_is_415(
    client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str]
) -> None:
    response = await client.request(method, url, content=b"<Patient/>", headers=headers)
    assert response.status_code == 415
    assert issue(response)["code"] == "not-supported"


async def test_accept_that_excludes_json_is_406(client: httpx.AsyncClient) -> None:
    response = await client.get("metadata", headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 406


@pytest.mark.parametrize(
    "query", ["_format=json", "_format=application/fhir%2Bjson", "_format=application/json"]
)
async def test_json_formats_are_accepted(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"metadata?{query}", headers={"Accept": "application/json"})
    assert response.status_code == 200


async def test_application_json_body_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "Patient", content=b'{"resourceType":"Patient"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201


async def test_conditional_update_and_delete_need_criteria(client: httpx.AsyncClient) -> None:
    update = await client.put("Patient", json=patient())
    assert update.status_code == 400
    delete = await client.delete("Patient")
    assert delete.status_code == 400


async def test_no_client_input_reaches_the_500_handler(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A small seeded fuzz over paths, headers and bodies: every answer is a FHIR
    error or success, and the last-resort handler never logs."""
    rng = random.Random(2026)
    paths = ["Patient", "Patient/1", "Patient/1/_history", "Patient/1/_history/1", "",
             "_history", "metadata", "Patient/_search", "Observation", "Unicorn/x",
             "Patient/../..", "Patient/%00", "Patient/" + "a" * 300, "Patient?_count=-1",
             "Patient?_count=abc", "Patient?birthdate=notadate", "Patient?_sort=nothing",
             "Patient?identifier=", "Patient/1/_history?_since=%FF", "Patient?_offset=1e9"]
    bodies = [b"{}", b"null", b"1.5", b'{"resourceType":"Bundle","type":"transaction",'
              b'"entry":[{"request":{}}]}', b'{"resourceType":"Bundle","type":"batch","entry":'
              b'[1,{"request":{"method":"GET","url":"Patient?_count=x"}}]}',
              b'{"resourceType":"Patient","id":7}', b'{"resourceType":"Patient","name":"x"}',
              b'{"resourceType":"Patient","birthDate":1e999}', b'{"resourceType":{}}',
              b'{"resourceType":"Patient","active":NaN}', bytes(range(256)),
              b'{"resourceType":"Bundle","type":"transaction","entry":[{"resource":'
              b'{"resourceType":"Patient"},"request":{"method":"PUT","url":"Patient?x=1"}}]}']
    headers = [{}, JSON, {"If-Match": "W/\"x\""}, {"If-None-Exist": "identifier=a|b"},
               {"If-None-Exist": "Observation?code=1"}, {"Prefer": "return=nonsense"},
               {"Prefer": "handling=strict"}, {"Content-Type": "multipart/form-data"},
               {"If-Match": 'W/"99999999999999999999"'}]
    caplog.set_level(logging.ERROR)
    for _ in range(250):
        method = rng.choice(["GET", "POST", "PUT", "DELETE"])
        path = rng.choice(paths)
        url = path if path else "http://fhir.test/fhir"
        response = await client.request(
            method, url, content=rng.choice(bodies) if method in ("POST", "PUT") else None,
            headers=rng.choice(headers),
        )
        assert response.status_code < 500, (method, path, response.text)
        if response.status_code >= 400:
            assert response.json()["resourceType"] == "OperationOutcome"
    assert not [r for r in caplog.records if "Unhandled" in r.getMessage()]


async def test_an_internal_failure_is_a_500_outcome_without_details(
    store: object, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_read(*args: object) -> None:
        raise RuntimeError("Chalmers 1974-12-25")  # as if a message quoted patient data

    monkeypatch.setattr(store, "read", broken_read)
    caplog.set_level(logging.ERROR)

    response = await client.get("Patient/example")

    assert response.status_code == 500
    found = issue(response)
    assert found["code"] == "exception"
    assert "Chalmers" not in response.text
    assert "Traceback" not in response.text
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError" in logged
    assert "Chalmers" not in logged


async def test_405_names_the_allowed_methods(client: httpx.AsyncClient) -> None:
    response = await client.post("Patient/example")
    assert response.status_code == 405
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD", "PUT", "PATCH", "DELETE"}


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "Patient", content=b"{}", headers={**JSON, "Content-Length": str(65 * 2**20)}
    )
    assert response.status_code == 413
