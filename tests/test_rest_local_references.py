"""References on this server's own base (R4 references.html#literal: an absolute URL on
the server's base names the same resource as the relative Type/id) are stored relative,
so search, compartments, chains, _has and _include see them; urn: references outside a
transaction are refused (R4 http.html#brules); a configured public base URL replaces the
Host header (links, Location, which references are local)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fhir_server.app import create_app
from fhir_server.storage.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

BASE = "http://fhir.test/fhir"  # the conftest client's base


def _observation(reference: str, text: str = "absref") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": text},
            "subject": {"reference": reference}}


def _ids(response: httpx.Response, mode: str = "match") -> set[str]:
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", [])
            if e["search"]["mode"] == mode}


@pytest.fixture
async def absolute(client: httpx.AsyncClient) -> tuple[str, str]:
    """A Patient and an Observation whose subject is the Patient's absolute URL."""
    patient = await client.post("Patient", json={"resourceType": "Patient",
                                                 "name": [{"family": "Tester"}]})
    pid = patient.json()["id"]
    assert patient.headers["location"].startswith(f"{BASE}/Patient/{pid}/_history/")
    created = await client.post("Observation", json=_observation(f"{BASE}/Patient/{pid}"))
    assert created.status_code == 201, created.text
    assert created.json()["subject"]["reference"] == f"Patient/{pid}"
    return pid, created.json()["id"]


async def test_own_base_reference_found_by_every_reference_search(
    client: httpx.AsyncClient, absolute: tuple[str, str]
) -> None:
    pid, oid = absolute
    assert _ids(await client.get("Observation", params={"subject": f"Patient/{pid}"})) == {oid}
    assert _ids(await client.get("Observation", params={"subject": pid})) == {oid}
    assert _ids(await client.get(
        "Observation", params={"subject": f"{BASE}/Patient/{pid}"})) == {oid}
    assert _ids(await client.get(f"Patient/{pid}/Observation")) == {oid}
    included = await client.get(
        "Observation", params={"_id": oid, "_include": "Observation:subject"})
    assert _ids(included, "include") == {pid}
    assert _ids(await client.get(
        "Observation", params={"_id": oid, "subject.family": "Tester"})) == {oid}
    assert _ids(await client.get(
        "Patient", params={"_has:Observation:subject:_id": oid})) == {pid}


async def test_update_and_version_specific_and_foreign_references(
    client: httpx.AsyncClient, absolute: tuple[str, str]
) -> None:
    pid, oid = absolute
    body = {**_observation(f"{BASE}/Patient/{pid}/_history/1"), "id": oid}
    updated = await client.put(f"Observation/{oid}", json=body)
    assert updated.status_code == 200, updated.text
    assert updated.json()["subject"]["reference"] == f"Patient/{pid}/_history/1"
    # another server's URL, and a URL on our base that is not Type/id, stay as written
    for reference in (f"http://elsewhere.test/fhir/Patient/{pid}", f"{BASE}/metadata"):
        other = await client.post("Observation", json=_observation(reference))
        assert other.status_code == 201, other.text
        assert other.json()["subject"]["reference"] == reference


async def test_bundle_entries_store_own_base_references_relative(
    client: httpx.AsyncClient, absolute: tuple[str, str]
) -> None:
    pid, _ = absolute
    for kind in ("batch", "transaction"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [{
            "resource": _observation(f"{BASE}/Patient/{pid}", kind),
            "request": {"method": "POST", "url": "Observation"},
        }]}
        response = await client.post(BASE, json=bundle)
        assert response.status_code == 200, response.text
        assert response.json()["entry"][0]["response"]["status"].startswith("201")
    found = await client.get("Observation", params={"subject": f"Patient/{pid}",
                                                    "code:text": "batch,transaction"})
    assert len(_ids(found)) == 2


async def test_if_none_exist_on_own_base(client: httpx.AsyncClient) -> None:
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:race", "value": "r1"}]}
    criteria = f"{BASE}/Patient?identifier=urn:race|r1"
    first = await client.post("Patient", json=body, headers={"If-None-Exist": criteria})
    again = await client.post("Patient", json=body, headers={"If-None-Exist": criteria})
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["id"] == first.json()["id"]


async def test_direct_create_refuses_urn_reference(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "Observation", json=_observation("urn:uuid:cccccccc-1111-1111-1111-111111111111"))
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Observation.subject.reference"]
    assert "urn:uuid" in issue["diagnostics"]
    contained = {"resourceType": "Patient", "contained": [_observation("urn:oid:1.2.3")]}
    refused = await client.post("Patient", json=contained)
    assert refused.status_code == 400
    assert refused.json()["issue"][0]["expression"] == [
        "Patient.contained[0].subject.reference"]


async def test_batch_entry_with_urn_reference_fails_alone(client: httpx.AsyncClient) -> None:
    urn = "urn:uuid:bbbbbbbb-1111-1111-1111-111111111111"
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": urn, "resource": {"resourceType": "Patient"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": _observation(urn), "request": {"method": "POST", "url": "Observation"}},
    ]}
    response = await client.post(BASE, json=bundle)
    assert response.status_code == 200, response.text
    first, second = (e["response"] for e in response.json()["entry"])
    assert first["status"].startswith("201")
    assert second["status"].startswith("400")
    assert "batch" in second["outcome"]["issue"][0]["diagnostics"]
    stored = await client.get("Observation", params={"_summary": "count"})
    assert stored.json()["total"] == 0


async def test_malformed_host_header_is_refused(client: httpx.AsyncClient) -> None:
    for host in ('a"b<script>', "evil example", "x/y"):
        response = await client.get("Patient", headers={"Host": host})
        assert response.status_code == 400, (host, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    ok = await client.get("Patient", headers={"Host": "[::1]:8080"})
    assert ok.json()["link"][0]["url"].startswith("http://[::1]:8080/fhir/Patient")


@pytest.fixture
async def public(store: SQLiteStore) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(store, base_url="https://fhir.example.org/api/fhir/")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fhir.test/fhir/") as c:
        yield c


async def test_configured_base_url_replaces_host(public: httpx.AsyncClient) -> None:
    own = "https://fhir.example.org/api/fhir"
    created = await public.post("Patient", json={"resourceType": "Patient"},
                                headers={"Host": "evil.example"})
    pid = created.json()["id"]
    assert created.headers["location"].startswith(f"{own}/Patient/{pid}/_history/")
    search = await public.get("Patient", headers={"Host": "evil.example"})
    assert search.json()["link"][0]["url"].startswith(f"{own}/Patient")
    # the configured base is this server's own; the address the request used is not
    mine = await public.post("Observation", json=_observation(f"{own}/Patient/{pid}"))
    assert mine.json()["subject"]["reference"] == f"Patient/{pid}"
    theirs = await public.post("Observation", json=_observation(f"{BASE}/Patient/{pid}"))
    assert theirs.json()["subject"]["reference"] == f"{BASE}/Patient/{pid}"


def test_base_url_setting_from_environment() -> None:
    from fhir_server.config import ConfigError, resolve_serve_config

    given: dict[str, Any] = {}
    config = resolve_serve_config(given, {"FHIR_FUSION_BASE_URL": "https://h.example/fhir/"})
    assert config.base_url == "https://h.example/fhir"
    assert resolve_serve_config(given, {}).base_url is None
    with pytest.raises(ConfigError, match="FHIR_FUSION_BASE_URL"):
        resolve_serve_config(given, {"FHIR_FUSION_BASE_URL": "ftp://h/fhir"})
