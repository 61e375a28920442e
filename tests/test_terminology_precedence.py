"""Which content answers for a code system url (break-api F1): the content the operator
loaded or the server ships is never shadowed by a client's CodeSystem resource of the
same url, unless the client's version is pinned; fragments never shadow complete
content; a $lookup writes no resource. On SQLite and on MongoDB (mongomock)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from mongo_async import AsyncMockClient
from terminology_backends import store  # noqa: F401 - SQLite and MongoDB (mongomock)

from fhir_server.storage.base import Context, ResourceStore
from terminology import content
from terminology.model import CodeSystemHeader, Concept
from terminology.store import concept_store

pytestmark = pytest.mark.anyio

LOINC = "http://loinc.org"
# the tester's repro: a complete "LOINC" with a hijacked display and an invented code
HIJACK = {"resourceType": "CodeSystem", "url": LOINC, "status": "active",
          "content": "complete", "concept": [{"code": "2345-7", "display": "HIJACKED"},
                                             {"code": "EVIL", "display": "Evil"}]}  # fmt: skip


def _whole_install_runs_on(store: ResourceStore) -> None:
    if isinstance(getattr(store, "client", None), AsyncMockClient):  # ~120,000 concepts
        pytest.skip("mongomock checks unique indexes by a scan per insert: hours for install")


def _params(body: dict[str, Any]) -> dict[str, Any]:
    assert body["resourceType"] == "Parameters", body
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
            for p in body["parameter"] if any(k.startswith("value") for k in p)}  # fmt: skip


async def _lookup(client: httpx.AsyncClient, code: str, **more: str) -> dict[str, Any]:
    r = await client.get("CodeSystem/$lookup", params={"system": LOINC, "code": code, **more})
    assert r.status_code == 200, r.text
    return _params(r.json())


async def _total(client: httpx.AsyncClient, url: str) -> int:
    r = await client.get(url)
    assert r.status_code == 200, r.text
    body = r.json()
    return int(body["expansion"]["total"] if "expansion" in body else body["total"])


async def test_posted_loinc_does_not_replace_the_shipped_loinc(client: httpx.AsyncClient) -> None:
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": LOINC, "code": "718-7"}]}}  # fmt: skip
    assert (await client.post("Observation", json=obs)).status_code == 201
    vs_total = await _total(client, "ValueSet/$expand?url=http://loinc.org/vs&count=1")
    assert vs_total > 100  # the shipped subset
    r = await client.post("CodeSystem", json=HIJACK)
    assert r.status_code == 201, r.text
    hijack_id = r.json()["id"]

    assert (await _lookup(client, "2345-7"))["display"] == (
        "Glucose [Mass/volume] in Serum or Plasma")
    r = await client.get("CodeSystem/$validate-code", params={"url": LOINC, "code": "EVIL"})
    assert _params(r.json())["result"] is False
    assert await _total(client, "ValueSet/$expand?url=http://loinc.org/vs&count=1") == vs_total
    assert await _total(client, "Observation?code:in=http://loinc.org/vs&_summary=count") == 1

    # deleting the client's resource leaves the shipped content as it was
    assert (await client.delete(f"CodeSystem/{hijack_id}")).status_code in (200, 204)
    assert (await _lookup(client, "2345-7"))["display"].startswith("Glucose")


async def test_operator_load_wins_over_a_resource_of_the_same_version(
    client: httpx.AsyncClient, store: ResourceStore
) -> None:
    ctx = Context()
    header = CodeSystemHeader(url=LOINC, version="2.77", name="LOINC", content="complete")
    await concept_store(store).load_code_system(
        ctx, header, [Concept("2345-7", "Glucose [Mass/volume] in Serum or Plasma")],
        keep_resource=False)  # fmt: skip
    same = {**HIJACK, "version": "2.77"}
    r = await client.post("CodeSystem", json=same)
    assert r.status_code == 201, r.text
    assert (await _lookup(client, "2345-7", version="2.77"))["display"].startswith("Glucose")
    assert (await _lookup(client, "2345-7"))["display"].startswith("Glucose")
    # the clash's resource removed: the operator's load is still there (not dropped with it)
    assert (await client.delete(f"CodeSystem/{r.json()['id']}")).status_code in (200, 204)
    out = await _lookup(client, "2345-7", version="2.77")
    assert out["display"].startswith("Glucose") and out["version"] == "2.77"


async def test_a_client_version_is_used_when_pinned(client: httpx.AsyncClient) -> None:
    local = {**HIJACK, "version": "local-1", "concept": [{"code": "2345-7",
                                                          "display": "Local glucose"}]}
    assert (await client.post("CodeSystem", json=local)).status_code == 201
    assert (await _lookup(client, "2345-7", version="local-1"))["display"] == "Local glucose"
    assert (await _lookup(client, "2345-7"))["display"].startswith("Glucose")


async def test_a_fragment_does_not_shadow_complete_content(client: httpx.AsyncClient) -> None:
    url = "http://example.org/fhir/CodeSystem/colours"
    complete = {"resourceType": "CodeSystem", "url": url, "status": "active",
                "content": "complete", "concept": [{"code": "red", "display": "Red"},
                                                   {"code": "blue", "display": "Blue"}]}
    fragment = {**complete, "content": "fragment",
                "concept": [{"code": "red", "display": "Rouge"}]}  # fmt: skip
    assert (await client.post("CodeSystem", json=complete)).status_code == 201
    assert (await client.post("CodeSystem", json=fragment)).status_code == 201
    r = await client.get("CodeSystem/$lookup", params={"system": url, "code": "red"})
    assert _params(r.json())["display"] == "Red"
    r = await client.get("CodeSystem/$validate-code", params={"url": url, "code": "blue"})
    assert _params(r.json())["result"] is True


async def test_lookup_writes_no_resource_and_install_keeps_them(
    client: httpx.AsyncClient, store: ResourceStore
) -> None:
    _whole_install_runs_on(store)
    gender = "http://hl7.org/fhir/administrative-gender"
    r = await client.get("CodeSystem/$lookup", params={"system": gender, "code": "female"})
    assert _params(r.json())["display"] == "Female"
    assert await _total(client, f"CodeSystem?url={gender}&_summary=count") == 0
    assert await _total(client, "CodeSystem?_summary=count") == 0
    # an expansion of a shipped value set not stored names no resource id
    r = await client.get("ValueSet/$expand",
                         params={"url": "http://hl7.org/fhir/ValueSet/administrative-gender"})
    assert r.status_code == 200 and "id" not in r.json()

    done = await content.install(store, Context())
    assert done["value_sets"] > 100
    assert await _total(client, f"CodeSystem?url={gender}&_summary=count") == 1
    r = await client.get("ValueSet/administrative-gender")
    assert r.status_code == 200 and r.json()["url"].endswith("/administrative-gender")
    r = await client.get("ValueSet/administrative-gender/$expand")
    assert {c["code"] for c in r.json()["expansion"]["contains"]} == {
        "male", "female", "other", "unknown"}


async def test_install_leaves_a_clients_concept_less_code_system_alone(
    client: httpx.AsyncClient, store: ResourceStore
) -> None:
    _whole_install_runs_on(store)
    # an IG's LOINC stand-in (content not-present, no concepts), as IGs commonly carry
    ig = {"resourceType": "CodeSystem", "id": "ig-loinc", "url": LOINC, "name": "IG_LOINC",
          "status": "active", "content": "not-present"}
    assert (await client.put("CodeSystem/ig-loinc", json=ig)).status_code == 201
    await content.install(store, Context())
    r = await client.get("CodeSystem/ig-loinc")
    assert r.json()["name"] == "IG_LOINC" and r.json()["meta"]["versionId"] == "1"
    assert (await _lookup(client, "2345-7"))["display"].startswith("Glucose")
