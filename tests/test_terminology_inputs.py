"""Terminology inputs checked, not silently ignored (break-api F14): an unknown filter
property, a malformed displayLanguage, a parameter of the wrong type, inconsistent
coding and code, and :below/:above with a code the system does not have are 400s
naming the bad thing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio

LOINC = "http://loinc.org"
GENDER = "http://hl7.org/fhir/administrative-gender"


def _diagnostics(r: httpx.Response) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return str(body["issue"][0]["diagnostics"])


def _expand_body(filters: list[dict[str, str]]) -> dict[str, Any]:
    vs = {"resourceType": "ValueSet", "status": "active",
          "compose": {"include": [{"system": LOINC, "filter": filters}]}}
    return {"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": vs}]}


async def test_unknown_filter_property_is_a_400(client: httpx.AsyncClient) -> None:
    r = await client.post("ValueSet/$expand",
                          json=_expand_body([{"property": "bogus", "op": "=", "value": "x"}]))
    assert r.status_code == 400, r.text
    assert "'bogus'" in _diagnostics(r) and LOINC in _diagnostics(r)
    # a property the shipped LOINC concepts carry works (the subset's "category")
    r = await client.post("ValueSet/$expand", json=_expand_body(
        [{"property": "category", "op": "=", "value": "vital-signs"}]))
    assert r.status_code == 200, r.text
    codes = {c["code"] for c in r.json()["expansion"]["contains"]}
    assert "8480-6" in codes and "2345-7" not in codes  # systolic BP yes, glucose no
    r = await client.post("ValueSet/$expand", json=_expand_body(
        [{"property": "display", "op": "bogus-op", "value": "x"}]))
    assert r.status_code == 400 and "bogus-op" in _diagnostics(r)


async def test_malformed_display_language_is_a_400(client: httpx.AsyncClient) -> None:
    r = await client.get("CodeSystem/$lookup",
                         params={"system": GENDER, "code": "male", "displayLanguage": "!!!"})
    assert r.status_code == 400 and "!!!" in _diagnostics(r)
    r = await client.get("ValueSet/$expand", params={
        "url": "http://hl7.org/fhir/ValueSet/administrative-gender", "displayLanguage": "!!!"})
    assert r.status_code == 400
    r = await client.get("CodeSystem/$lookup",
                         params={"system": GENDER, "code": "male", "displayLanguage": "zh-CN"})
    assert r.status_code == 200


async def test_lookup_parameter_of_the_wrong_type_is_a_400(client: httpx.AsyncClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "system", "valueInteger": 5}, {"name": "code", "valueCode": "2345-7"}]}
    r = await client.post("CodeSystem/$lookup", json=body)
    assert r.status_code == 400, r.text
    assert "'system'" in _diagnostics(r) and "valueInteger" in _diagnostics(r)


async def test_lookup_with_inconsistent_coding_and_code_is_a_400(
    client: httpx.AsyncClient,
) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": LOINC, "code": "2345-7"}},
        {"name": "code", "valueCode": "718-7"}]}
    r = await client.post("CodeSystem/$lookup", json=body)
    assert r.status_code == 400, r.text
    assert "718-7" in _diagnostics(r) and "2345-7" in _diagnostics(r)
    body["parameter"][1]["valueCode"] = "2345-7"  # the same code twice is consistent
    r = await client.post("CodeSystem/$lookup", json=body)
    assert r.status_code == 200, r.text


async def test_below_above_with_a_code_not_in_the_system_is_a_400(
    client: httpx.AsyncClient,
) -> None:
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    for modifier in ("below", "above"):
        r = await client.get(f"Condition?code:{modifier}={icd}|E00-E89")
        assert r.status_code == 400, r.text
        assert "E00-E89" in _diagnostics(r)
    # a real block of the chapter works: E08-E13 (Diabetes mellitus)
    r = await client.get(f"Condition?code:below={icd}|E08-E13")
    assert r.status_code == 200, r.text


async def test_codeable_concept_with_one_unknown_coding_says_so(
    client: httpx.AsyncClient,
) -> None:
    concept = {"coding": [{"system": LOINC, "code": "9999-9"},
                          {"system": LOINC, "code": "2345-7"}]}
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": LOINC}, {"name": "codeableConcept",
                                            "valueCodeableConcept": concept}]}  # fmt: skip
    r = await client.post("CodeSystem/$validate-code", json=body)
    assert r.status_code == 200, r.text
    out = {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
           for p in r.json()["parameter"]}
    assert out["result"] is True
    assert "9999-9" in out["message"]


async def test_a_regional_display_language_never_gets_another_script(
    client: httpx.AsyncClient,
) -> None:
    params = {"system": LOINC, "code": "2345-7"}
    r = await client.get("CodeSystem/$lookup", params={**params, "displayLanguage": "zh-CN"})
    display = {p["name"]: p.get("valueString") for p in r.json()["parameter"]}["display"]
    assert display == "血清或血浆葡萄糖"  # the subset's (simplified) Chinese display
    r = await client.get("CodeSystem/$lookup", params={**params, "displayLanguage": "zh-TW"})
    display = {p["name"]: p.get("valueString") for p in r.json()["parameter"]}["display"]
    assert display == "Glucose [Mass/volume] in Serum or Plasma"  # not the zh-CN one


async def test_include_designations_is_recorded_in_the_expansion(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("ValueSet/$expand", params={
        "url": "http://loinc.org/vs", "filter": "glucose", "count": "1",
        "includeDesignations": "true"})
    assert r.status_code == 200, r.text
    expansion = r.json()["expansion"]
    assert {"name": "includeDesignations", "valueBoolean": True} in expansion["parameter"]
    assert expansion["contains"][0]["designation"]
