"""Required bindings (R4 terminologies.html#required) and the narrative rules
(R4 narrative.html#xhtml, txt-1/txt-2) as validation enforces them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from conformance.definitions import element_types
from conformance.validation import validation_issues

XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def issues(resource: Any) -> list[tuple[str, str]]:
    return [(i.code, i.expression[0]) for i in validation_issues(resource)]


def test_the_table_expands_r4_required_value_sets() -> None:
    types, value_sets = element_types()
    gender = value_sets[types["Patient"]["gender"][2]]
    assert gender[0] == "http://hl7.org/fhir/ValueSet/administrative-gender"
    assert gender[1] == {"male", "female", "other", "unknown"}
    status = value_sets[types["Observation"]["status"][2]]
    assert status[1] == {
        "registered", "preliminary", "final", "amended", "corrected", "cancelled",
        "entered-in-error", "unknown",
    }
    # example/extensible bindings are not checked
    assert types["Observation"]["code"][2] == -1
    assert types["Patient"]["maritalStatus"][2] == -1


def test_code_outside_a_required_value_set_is_code_invalid() -> None:
    found = validation_issues({"resourceType": "Patient", "gender": "robot"})
    assert [(i.code, i.expression) for i in found] == [("code-invalid", ("Patient.gender",))]
    assert "http://hl7.org/fhir/ValueSet/administrative-gender" in found[0].diagnostics
    assert issues({"resourceType": "Observation", "status": "notastatus",
                   "code": {"text": "g"}}) == [("code-invalid", "Observation.status")]
    # codes are case-sensitive
    assert issues({"resourceType": "Patient", "gender": "Male"}) == [
        ("code-invalid", "Patient.gender")
    ]
    assert issues({"resourceType": "Patient", "gender": "unknown"}) == []


def test_binding_applies_in_data_types_and_backbones() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"use": "nickname"}, {"use": "alias", "text": "A"}],
        "telecom": [{"system": "pager", "value": "1"}],
        "link": [{"other": {"reference": "Patient/x"}, "type": "seealso"}],
    }
    assert issues(patient) == [
        ("code-invalid", "Patient.name[1].use"),
    ]


def test_codeable_concept_needs_one_coding_from_the_set_when_its_system_is_used() -> None:
    system = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"

    def allergy(*codings: dict[str, str]) -> dict[str, Any]:
        return {
            "resourceType": "AllergyIntolerance",
            "patient": {"reference": "Patient/p"},
            "clinicalStatus": {"coding": list(codings)},
        }

    assert issues(allergy({"system": system, "code": "active"})) == []
    assert issues(allergy({"system": system, "code": "gone"})) == [
        ("code-invalid", "AllergyIntolerance.clinicalStatus.coding[0]")
    ]
    # a local translation alongside a valid coding is fine; alone, it is not judged here
    assert issues(allergy({"system": "urn:local", "code": "A"},
                          {"system": system, "code": "resolved"})) == []
    assert issues(allergy({"system": "urn:local", "code": "A"})) == []


@pytest.mark.parametrize(
    ("div", "valid"),
    [
        (f"<div {XHTML}><p>Glucose <b>normal</b></p></div>", True),
        (f'<div {XHTML}><img src="#pic" alt="x"/><a href="http://hl7.org">spec</a></div>', True),
        ("<div><p>no namespace</p></div>", False),
        (f"<p {XHTML}>not a div</p>", False),
        (f"<div {XHTML}><script>alert(1)</script></div>", False),
        (f'<div {XHTML}><p onclick="alert(1)">x</p></div>', False),
        (f'<div {XHTML}><a href="javascript:alert(1)">x</a></div>', False),
        (f'<div {XHTML}><img src="http://elsewhere.test/track.png"/></div>', False),
        (f'<div {XHTML}><p style="background:url(http://e.test/x)">x</p></div>', False),
        (f"<div {XHTML}><iframe/></div>", False),
        (f"<div {XHTML}>unclosed", False),
        (f'<!DOCTYPE d [<!ENTITY e "x">]><div {XHTML}>&e;</div>', False),
    ],
)
def test_narrative_rules(div: str, valid: bool) -> None:
    patient = {"resourceType": "Patient", "text": {"status": "generated", "div": div}}
    assert issues(patient) == ([] if valid else [("value", "Patient.text.div")])


@pytest.mark.anyio
async def test_rest_rejects_bad_codes_in_patch_and_transaction(client: httpx.AsyncClient) -> None:
    created = await client.post("Patient", json={"resourceType": "Patient", "gender": "male"})
    assert created.status_code == 201
    assert (await client.post("Patient", json={"resourceType": "Patient", "gender": "robot"})
            ).status_code == 400
    patch = [{"op": "replace", "path": "/gender", "value": "robot"}]
    patched = await client.patch(
        f"Patient/{created.json()['id']}", content=json.dumps(patch), headers=JSON_PATCH
    )
    assert patched.status_code == 400
    assert patched.json()["issue"][0]["code"] == "code-invalid"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": {"resourceType": "Observation", "status": "notastatus",
                     "code": {"text": "g"}},
        "request": {"method": "POST", "url": "Observation"},
    }]}
    response = await client.post("http://fhir.test/fhir", json=bundle)
    assert response.status_code == 400
    assert (await client.get("Observation")).json().get("total", 0) == 0
