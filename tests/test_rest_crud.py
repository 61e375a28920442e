"""create, read, vread, update, delete and history through the HTTP API (R4 http.html)."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from rest_examples import patient

pytestmark = pytest.mark.anyio

FHIR_JSON = "application/fhir+json; charset=utf-8"

LOCATION = re.compile(r"^http://fhir\.test/fhir/Patient/([A-Za-z0-9\-.]{1,64})/_history/1$")


async def create_patient(client: httpx.AsyncClient, **changes: Any) -> str:
    response = await client.post("Patient", json=patient(**changes))
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def test_create_assigns_an_id_and_answers_with_version_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "Patient", json=patient(), headers={"Content-Type": "application/fhir+json"}
    )

    assert response.status_code == 201
    assert response.headers["content-type"] == FHIR_JSON
    body = response.json()
    assert body["id"] != "example"  # the client's id is ignored on create
    assert LOCATION.match(response.headers["location"]).group(1) == body["id"]
    assert response.headers["etag"] == 'W/"1"'
    assert body["meta"]["versionId"] == "1"
    last_modified = parsedate_to_datetime(response.headers["last-modified"])
    assert body["meta"]["lastUpdated"].startswith(last_modified.strftime("%Y-%m-%dT%H:%M:%S"))
    assert body["name"][0]["family"] == "Chalmers"
    assert body["birthDate"] == "1974-12-25"


async def test_read_returns_the_stored_resource(client: httpx.AsyncClient) -> None:
    pid = await create_patient(client)

    response = await client.get(f"Patient/{pid}")

    assert response.status_code == 200
    assert response.headers["content-type"] == FHIR_JSON
    assert response.headers["etag"] == 'W/"1"'
    body = response.json()
    assert body["id"] == pid
    assert body["identifier"][0]["value"] == "12345"
    assert body["address"][0]["city"] == "PleasantVille"


async def test_read_with_matching_if_none_match_is_304(client: httpx.AsyncClient) -> None:
    pid = await create_patient(client)
    response = await client.get(f"Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304


async def test_decimal_precision_survives_byte_for_byte(client: httpx.AsyncClient) -> None:
    body = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"Potassium"},'
        b'"valueQuantity":{"value":1.50,"unit":"mmol/L"},'
        b'"referenceRange":[{"low":{"value":3.500},"high":{"value":5.10}}]}'
    )
    created = await client.post(
        "Observation", content=body, headers={"Content-Type": "application/fhir+json"}
    )
    assert created.status_code == 201
    assert b'"value":1.50,' in created.content

    read = await client.get(f"Observation/{created.json()['id']}")

    assert b'"valueQuantity":{"value":1.50,"unit":"mmol/L"}' in read.content
    assert b'"low":{"value":3.500}' in read.content
    assert b'"high":{"value":5.10}' in read.content


async def test_update_makes_version_2_and_vread_keeps_version_1(
    client: httpx.AsyncClient,
) -> None:
    pid = await create_patient(client)

    updated = await client.put(f"Patient/{pid}", json=patient(id=pid, gender="female"))

    assert updated.status_code == 200
    assert updated.headers["etag"] == 'W/"2"'
    assert updated.json()["meta"]["versionId"] == "2"
    assert (await client.get(f"Patient/{pid}")).json()["gender"] == "female"
    first = await client.get(f"Patient/{pid}/_history/1")
    assert first.status_code == 200
    assert first.json()["gender"] == "male"
    assert first.headers["etag"] == 'W/"1"'
    second = await client.get(f"Patient/{pid}/_history/2")
    assert second.json()["gender"] == "female"


async def test_update_with_the_same_content_keeps_the_version(client: httpx.AsyncClient) -> None:
    pid = await create_patient(client)
    again = await client.put(f"Patient/{pid}", json=patient(id=pid))
    assert again.status_code == 200
    assert again.headers["etag"] == 'W/"1"'


async def test_update_as_create_uses_the_client_id(client: httpx.AsyncClient) -> None:
    response = await client.put("Patient/example", json=patient())

    assert response.status_code == 201
    assert response.headers["location"] == "http://fhir.test/fhir/Patient/example/_history/1"
    assert (await client.get("Patient/example")).json()["name"][1]["given"] == ["Jim"]


async def test_delete_then_read_is_410_and_vread_of_the_delete_is_410(
    client: httpx.AsyncClient,
) -> None:
    pid = await create_patient(client)

    deleted = await client.delete(f"Patient/{pid}")

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert deleted.headers["etag"] == 'W/"2"'
    gone = await client.get(f"Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert (await client.get(f"Patient/{pid}/_history/2")).status_code == 410
    assert (await client.get(f"Patient/{pid}/_history/1")).status_code == 200


async def test_delete_of_an_unknown_resource_is_204(client: httpx.AsyncClient) -> None:
    response = await client.delete("Patient/never-was")
    assert response.status_code == 204


async def test_update_after_delete_recreates_the_resource(client: httpx.AsyncClient) -> None:
    pid = await create_patient(client)
    await client.delete(f"Patient/{pid}")
    again = await client.put(f"Patient/{pid}", json=patient(id=pid))
    assert again.status_code == 201
    assert again.headers["etag"] == 'W/"3"'


async def test_read_and_vread_of_unknown_are_404(client: httpx.AsyncClient) -> None:
    missing = await client.get("Patient/nobody")
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"
    pid = await create_patient(client)
    assert (await client.get(f"Patient/{pid}/_history/7")).status_code == 404
    assert (await client.get(f"Patient/{pid}/_history/x")).status_code == 404


@pytest.mark.parametrize(
    ("preference", "status", "kind"),
    [
        pytest.param("return=minimal", 201, None, id="minimal"),
        pytest.param("return=representation", 201, "Patient", id="representation"),
        pytest.param("return=OperationOutcome", 201, "OperationOutcome", id="outcome"),
    ],
)
async def test_prefer_return_shapes_the_create_response(
    client: httpx.AsyncClient, preference: str, status: int, kind: str | None
) -> None:
    response = await client.post("Patient", json=patient(), headers={"Prefer": preference})

    assert response.status_code == status
    assert response.headers["etag"] == 'W/"1"'
    assert LOCATION.match(response.headers["location"])
    if kind is None:
        assert response.content == b""
    else:
        assert response.json()["resourceType"] == kind


async def test_if_match_guards_update_and_delete(client: httpx.AsyncClient) -> None:
    pid = await create_patient(client)

    stale = await client.put(
        f"Patient/{pid}", json=patient(id=pid, gender="other"), headers={"If-Match": 'W/"2"'}
    )
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["code"] == "conflict"
    fresh = await client.put(
        f"Patient/{pid}", json=patient(id=pid, gender="other"), headers={"If-Match": 'W/"1"'}
    )
    assert fresh.status_code == 200
    assert (await client.delete(f"Patient/{pid}", headers={"If-Match": 'W/"1"'})).status_code == 412
    assert (await client.delete(f"Patient/{pid}", headers={"If-Match": 'W/"2"'})).status_code == 204


async def test_malformed_if_match_is_400(client: httpx.AsyncClient) -> None:
    pid = await create_patient(client)
    response = await client.put(
        f"Patient/{pid}", json=patient(id=pid), headers={"If-Match": "yesterday"}
    )
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["If-Match"]


async def test_instance_history_lists_versions_newest_first_with_the_delete(
    client: httpx.AsyncClient,
) -> None:
    pid = await create_patient(client)
    await client.put(f"Patient/{pid}", json=patient(id=pid, gender="female"))
    await client.delete(f"Patient/{pid}")

    response = await client.get(f"Patient/{pid}/_history")

    assert response.status_code == 200
    bundle = response.json()
    assert bundle["type"] == "history"
    assert bundle["total"] == 3
    requests = [(e["request"]["method"], e["request"]["url"]) for e in bundle["entry"]]
    assert requests == [
        ("DELETE", f"Patient/{pid}"), ("PUT", f"Patient/{pid}"), ("POST", "Patient")
    ]
    statuses = [e["response"]["status"] for e in bundle["entry"]]
    assert statuses == ["204 No Content", "200 OK", "201 Created"]
    assert "resource" not in bundle["entry"][0]
    assert bundle["entry"][1]["resource"]["gender"] == "female"
    assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert bundle["entry"][2]["fullUrl"] == f"http://fhir.test/fhir/Patient/{pid}"


async def test_history_pages_with_count_and_offset(client: httpx.AsyncClient) -> None:
    pid = await create_patient(client)
    for gender in ("female", "other", "unknown", "male"):
        await client.put(f"Patient/{pid}", json=patient(id=pid, gender=gender))

    first = (await client.get(f"Patient/{pid}/_history", params={"_count": "2"})).json()

    assert first["total"] == 5
    assert [e["response"]["etag"] for e in first["entry"]] == ['W/"5"', 'W/"4"']
    links = {link["relation"]: link["url"] for link in first["link"]}
    # _anchor: the versions there were at the first page, so later pages stay put
    assert links["next"].endswith(f"/Patient/{pid}/_history?_anchor=5&_count=2&_offset=2")
    last = (await client.get(links["next"].replace("_offset=2", "_offset=4"))).json()
    assert [e["response"]["etag"] for e in last["entry"]] == ['W/"1"']
    assert "next" not in {link["relation"] for link in last["link"]}


async def test_history_since_cuts_at_an_instant(client: httpx.AsyncClient) -> None:
    pid = await create_patient(client)
    second = await client.put(f"Patient/{pid}", json=patient(id=pid, gender="female"))
    cut = second.json()["meta"]["lastUpdated"]

    bundle = (await client.get(f"Patient/{pid}/_history", params={"_since": cut})).json()

    assert bundle["total"] == 1
    assert bundle["entry"][0]["response"]["etag"] == 'W/"2"'
    bad = await client.get(f"Patient/{pid}/_history", params={"_since": "last tuesday"})
    assert bad.status_code == 400


async def test_type_and_system_history(client: httpx.AsyncClient) -> None:
    await create_patient(client)
    await create_patient(client)
    obs = await client.post(
        "Observation", json={"resourceType": "Observation", "status": "final",
                             "code": {"text": "Heart rate"}}
    )
    assert obs.status_code == 201

    by_type = (await client.get("Patient/_history")).json()
    everything = (await client.get("_history")).json()

    assert by_type["total"] == 2
    assert {e["resource"]["resourceType"] for e in by_type["entry"]} == {"Patient"}
    assert everything["total"] == 3
    assert everything["entry"][0]["resource"]["resourceType"] == "Observation"


async def test_history_of_unknown_instance_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("Patient/nobody/_history")
    assert response.status_code == 404


async def test_head_answers_headers_without_a_body(client: httpx.AsyncClient) -> None:
    pid = await create_patient(client)
    response = await client.head(f"Patient/{pid}")
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"1"'
    assert response.content == b""


@pytest.mark.parametrize(
    ("preference", "status", "body"),
    [
        pytest.param(None, 200, "Patient", id="default-representation"),
        pytest.param("return=minimal", 200, None, id="minimal"),
        pytest.param("return=OperationOutcome", 200, "OperationOutcome", id="outcome"),
    ],
)
async def test_prefer_on_update(
    client: httpx.AsyncClient, preference: str | None, status: int, body: str | None
) -> None:
    pid = await create_patient(client)
    headers = {"Prefer": preference} if preference else {}
    response = await client.put(
        f"Patient/{pid}", json=patient(id=pid, active=False), headers=headers
    )
    assert response.status_code == status
    assert response.headers["etag"] == 'W/"2"'
    if body is None:
        assert response.content == b""
    else:
        assert response.json()["resourceType"] == body


async def test_delete_with_prefer_outcome_is_200_with_an_outcome(
    client: httpx.AsyncClient,
) -> None:
    pid = await create_patient(client)
    response = await client.delete(f"Patient/{pid}", headers={"Prefer": "return=OperationOutcome"})
    assert response.status_code == 200
    assert response.json()["issue"][0]["severity"] == "information"


async def test_subscription_is_refused_while_no_notification_is_sent(
    client: httpx.AsyncClient,
) -> None:
    """R4 subscription.html: a server that cannot serve a Subscription rejects it rather
    than leaving it 'requested' forever."""
    subscription = {
        "resourceType": "Subscription", "status": "requested", "reason": "monitor",
        "criteria": "Observation?code=http://loinc.org|1975-2",
        "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook",
                    "payload": "application/fhir+json"},
    }
    response = await client.post("Subscription", json=subscription)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "not-supported"
    assert "Subscription" in issue["diagnostics"]
    put = await client.put("Subscription/s1", json={**subscription, "id": "s1"})
    assert put.status_code == 422
    assert (await client.get("Subscription")).json()["total"] == 0


async def test_capability_statement_offers_no_subscription_writes(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("metadata")).json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
    codes = {i["code"] for i in entry["interaction"]}
    assert "read" in codes and "search-type" in codes
    assert not codes & {"create", "update", "patch"}
