"""GET /metadata?mode=terminology (R4 TerminologyCapabilities, break-api F3) and the
terminology operations listed per resource type in the CapabilityStatement (F4)."""

from __future__ import annotations

import httpx
import pytest
from terminology_backends import store  # noqa: F401 - SQLite and MongoDB (mongomock)

from fhir_server.storage.base import Context, ResourceStore
from terminology.model import CodeSystemHeader, Concept
from terminology.store import concept_store

pytestmark = pytest.mark.anyio


async def test_mode_terminology_answers_terminology_capabilities(
    client: httpx.AsyncClient, store: ResourceStore
) -> None:
    header = CodeSystemHeader(url="http://loinc.org", version="2.77", name="LOINC")
    await concept_store(store).load_code_system(
        Context(), header, [Concept("2345-7", "Glucose")], keep_resource=False)
    r = await client.get("metadata", params={"mode": "terminology"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "TerminologyCapabilities"
    assert body["status"] == "active" and body["kind"] == "instance"
    systems = {cs["uri"]: cs for cs in body["codeSystem"]}
    assert systems["http://loinc.org"]["version"] == [{"code": "2.77"}]
    # shipped content and UCUM are listed too
    assert {"http://hl7.org/fhir/sid/icd-10-cm", "http://unitsofmeasure.org",
            "http://hl7.org/fhir/administrative-gender"} <= set(systems)
    names = {p["name"] for p in body["expansion"]["parameter"]}
    assert {"filter", "count", "offset", "displayLanguage"} <= names
    assert body["validateCode"] == {"translations": False}
    assert body["closure"] == {"translation": False}


async def test_other_modes(client: httpx.AsyncClient) -> None:
    r = await client.get("metadata", params={"mode": "full"})
    assert r.status_code == 200 and r.json()["resourceType"] == "CapabilityStatement"
    r = await client.get("metadata", params={"mode": "bogus"})
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "bogus" in r.json()["issue"][0]["diagnostics"]


async def test_type_level_operations_in_the_capability_statement(
    client: httpx.AsyncClient,
) -> None:
    resources = {e["type"]: e for e in (await client.get("metadata")).json()["rest"][0]["resource"]}
    ops = {t: {o["name"]: o["definition"] for o in resources[t].get("operation", [])}
           for t in ("CodeSystem", "ValueSet", "ConceptMap", "Patient")}  # fmt: skip
    assert set(ops["CodeSystem"]) == {"lookup", "validate-code", "subsumes"}
    assert set(ops["ValueSet"]) == {"expand", "validate-code"}
    assert set(ops["ConceptMap"]) == {"translate"}
    assert ops["Patient"] == {}
    # each definition is readable and is the one for that type
    for resource_type in ("CodeSystem", "ValueSet"):
        url = ops[resource_type]["validate-code"]
        r = await client.get(url)
        assert r.status_code == 200, url
        assert r.json()["resource"] == [resource_type]
