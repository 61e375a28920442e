"""GET [base]/metadata: the CapabilityStatement lists what the server implements."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from rest_examples import patient

from conformance.definitions import RESOURCE_TYPES
from conformance.validation import validation_issues

pytestmark = pytest.mark.anyio


@pytest.fixture
async def capability(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("metadata")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    return response.json()


def resource_entry(capability: dict[str, Any], resource_type: str) -> dict[str, Any]:
    (entry,) = [r for r in capability["rest"][0]["resource"] if r["type"] == resource_type]
    return entry


async def test_statement_header(capability: dict[str, Any]) -> None:
    assert capability["resourceType"] == "CapabilityStatement"
    assert capability["fhirVersion"] == "4.0.1"
    assert capability["format"] == ["json"]
    assert capability["kind"] == "instance"
    assert capability["status"] == "active"
    assert capability["implementation"]["url"] == "http://fhir.test/fhir"
    assert capability["rest"][0]["mode"] == "server"
    assert validation_issues(capability, "CapabilityStatement") == []


async def test_every_r4_resource_type_is_listed(capability: dict[str, Any]) -> None:
    listed = [r["type"] for r in capability["rest"][0]["resource"]]
    assert set(listed) == RESOURCE_TYPES
    assert len(listed) == len(RESOURCE_TYPES)
    assert {"Patient", "Observation", "MedicationStatement", "ImagingStudy"} <= set(listed)


async def test_type_interactions_and_flags(capability: dict[str, Any]) -> None:
    entry = resource_entry(capability, "Patient")
    assert [i["code"] for i in entry["interaction"]] == [
        "read", "vread", "update", "patch", "delete", "history-instance", "history-type",
        "create", "search-type",
    ]
    assert entry["versioning"] == "versioned-update"
    assert entry["readHistory"] is True
    assert entry["updateCreate"] is True
    assert entry["conditionalCreate"] is True
    assert entry["conditionalUpdate"] is True
    assert entry["conditionalDelete"] == "single"


async def test_system_interactions(capability: dict[str, Any]) -> None:
    codes = [i["code"] for i in capability["rest"][0]["interaction"]]
    assert codes == ["transaction", "batch", "search-system", "history-system"]


async def test_search_params_are_only_the_supported_kinds(capability: dict[str, Any]) -> None:
    params = {p["name"]: p for p in resource_entry(capability, "Patient")["searchParam"]}
    assert params["family"]["type"] == "string"
    assert params["identifier"]["type"] == "token"
    assert params["birthdate"]["type"] == "date"
    assert params["general-practitioner"]["type"] == "reference"
    birthdate = "http://hl7.org/fhir/SearchParameter/individual-birthdate"
    assert params["birthdate"]["definition"] == birthdate
    assert {"_id", "_lastUpdated"} <= set(params)

    observation = {p["name"] for p in resource_entry(capability, "Observation")["searchParam"]}
    assert {"code", "subject", "date", "status"} <= observation
    assert {"value-quantity", "code-value-quantity"} <= observation
    for entry in capability["rest"][0]["resource"]:
        for param in entry.get("searchParam", []):
            # special (Location near) is not supported
            assert param["type"] in {
                "token", "string", "reference", "date", "number", "quantity", "uri", "composite"
            }


async def test_each_listed_interaction_is_served(
    client: httpx.AsyncClient, capability: dict[str, Any]
) -> None:
    """Consistency: a request for every interaction the statement lists for Patient
    reaches a handler (no 404/405 from the router)."""
    pid = (await client.post("Patient", json=patient())).json()["id"]
    requests = {
        "read": ("GET", f"Patient/{pid}", None),
        "vread": ("GET", f"Patient/{pid}/_history/1", None),
        "update": ("PUT", f"Patient/{pid}", patient(id=pid, gender="female")),
        "patch": ("PATCH", f"Patient/{pid}",
                  [{"op": "replace", "path": "/gender", "value": "other"}]),
        "delete": ("DELETE", f"Patient/{pid}", None),
        "history-instance": ("GET", f"Patient/{pid}/_history", None),
        "history-type": ("GET", "Patient/_history", None),
        "create": ("POST", "Patient", patient()),
        "search-type": ("GET", "Patient?family=Chalmers", None),
        "transaction": ("POST", "http://fhir.test/fhir",
                        {"resourceType": "Bundle", "type": "transaction", "entry": []}),
        "batch": ("POST", "http://fhir.test/fhir",
                  {"resourceType": "Bundle", "type": "batch", "entry": []}),
        "search-system": ("GET", "http://fhir.test/fhir?_id=x", None),
        "history-system": ("GET", "_history", None),
    }
    listed = [i["code"] for i in resource_entry(capability, "Patient")["interaction"]]
    listed += [i["code"] for i in capability["rest"][0]["interaction"]]
    assert set(listed) == set(requests)
    for code in listed:
        method, url, body = requests[code]
        headers = {"Content-Type": "application/json-patch+json"} if method == "PATCH" else {}
        response = await client.request(method, url, json=body, headers=headers)
        assert response.status_code in (200, 201, 204), (code, response.text)


def test_every_r4_composite_is_advertised() -> None:
    """All 46 R4 composites are searchable, so listed: MolecularSequence's coordinate
    composites (token$number$number), DocumentReference relationship (reference$token)
    and Observation's code-value-quantity among them."""
    from conformance.capability import search_params

    molecular = {p["name"]: p["type"] for p in search_params("MolecularSequence")}
    for code in ("chromosome-variant-coordinate", "chromosome-window-coordinate",
                 "referenceseqid-variant-coordinate", "referenceseqid-window-coordinate"):
        assert molecular[code] == "composite"
    document = {p["name"]: p["type"] for p in search_params("DocumentReference")}
    assert document["relationship"] == "composite"
    observation = {p["name"]: p["type"] for p in search_params("Observation")}
    assert observation["code-value-quantity"] == "composite"
