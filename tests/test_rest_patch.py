"""PATCH with JSON Patch (RFC 6902; R4 http.html#patch), over HTTP and in Bundles."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from rest_examples import patient

from fhir_server.errors import FHIRError
from fhir_server.patch import apply_patch

pytestmark = pytest.mark.anyio

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


async def test_patch_applies_operations_and_makes_a_new_version(
    client: httpx.AsyncClient,
) -> None:
    await client.put("Patient/example", json=patient())
    operations = [
        {"op": "test", "path": "/gender", "value": "male"},
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/name/0/given/-", "value": "Jamie"},
        {"op": "remove", "path": "/telecom"},
        {"op": "copy", "from": "/name/0/family", "path": "/name/1/family"},
        {"op": "move", "from": "/name/1", "path": "/name/0"},
    ]

    response = await client.patch(
        "Patient/example", content=json.dumps(operations), headers=JSON_PATCH
    )

    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'
    body = response.json()
    assert body["gender"] == "female"
    assert body["name"][0] == {"use": "usual", "given": ["Jim"], "family": "Chalmers"}
    assert body["name"][1]["given"] == ["Peter", "James", "Jamie"]
    assert "telecom" not in body


@pytest.mark.parametrize(
    ("operations", "status"),
    [
        pytest.param([{"op": "test", "path": "/gender", "value": "female"}], 422, id="test-fails"),
        pytest.param([{"op": "remove", "path": "/photo"}], 422, id="missing-path"),
        pytest.param([{"op": "replace", "path": "/id", "value": "other"}], 422, id="change-id"),
        pytest.param([{"op": "add", "path": "/shoeSize", "value": 42}], 400, id="unknown-element"),
        pytest.param([{"op": "jump", "path": "/gender"}], 400, id="unknown-op"),
        pytest.param({"op": "remove", "path": "/gender"}, 400, id="not-a-list"),
        pytest.param([{"op": "add", "path": "gender", "value": "x"}], 400, id="bad-pointer"),
    ],
)
async def test_bad_patches_change_nothing(
    client: httpx.AsyncClient, operations: Any, status: int
) -> None:
    await client.put("Patient/example", json=patient())
    response = await client.patch(
        "Patient/example", content=json.dumps(operations), headers=JSON_PATCH
    )
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
    assert (await client.get("Patient/example")).headers["etag"] == 'W/"1"'


async def test_patch_of_unknown_is_404_and_wrong_media_type_is_415(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.patch("Patient/nobody", content=b"[]", headers=JSON_PATCH)
    assert missing.status_code == 404
    wrong = await client.patch("Patient/nobody", json=[])
    assert wrong.status_code == 415


async def test_patch_honours_if_match(client: httpx.AsyncClient) -> None:
    await client.put("Patient/example", json=patient())
    patch = json.dumps([{"op": "replace", "path": "/active", "value": False}])
    stale = await client.patch(
        "Patient/example", content=patch, headers={**JSON_PATCH, "If-Match": 'W/"3"'}
    )
    assert stale.status_code == 412


async def test_patch_entry_in_a_transaction(client: httpx.AsyncClient) -> None:
    await client.put("Patient/example", json=patient())
    data = base64.b64encode(b'[{"op": "replace", "path": "/active", "value": false}]').decode()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                     "data": data},
        "request": {"method": "PATCH", "url": "Patient/example"},
    }]}

    response = await client.post("http://fhir.test/fhir", json=bundle)

    assert response.status_code == 200
    assert response.json()["entry"][0]["response"]["status"] == "200 OK"
    assert (await client.get("Patient/example")).json()["active"] is False


def test_apply_patch_follows_rfc6902_examples() -> None:
    # RFC 6902 appendix A.1 (add an object member) and A.2 (add an array element)
    assert apply_patch({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}]) == {
        "baz": "qux", "foo": "bar"}
    assert apply_patch({"foo": ["bar", "baz"]},
                       [{"op": "add", "path": "/foo/1", "value": "qux"}]) == {
        "foo": ["bar", "qux", "baz"]}
    # A.14: ~0 and ~1 escapes
    assert apply_patch({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}]) == {
        "/": 9, "~1": 10}
    with pytest.raises(FHIRError):
        apply_patch({"foo": ["bar"]}, [{"op": "add", "path": "/foo/5", "value": 1}])
