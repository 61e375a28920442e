"""FHIR JSON rules (R4 json.html) that validation enforces beyond the R4B models' lax
parsing: JSON types of primitives, null, empty objects and arrays (ele-1), 32-bit
integers, control characters, nesting depth."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from conformance.validation import MAX_DEPTH, validation_issues
from fhir_server import jsonutil

JSON = {"Content-Type": "application/fhir+json"}


def paths(resource: Any) -> list[tuple[str, str]]:
    return [(i.code, i.expression[0]) for i in validation_issues(resource)]


def observation(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "glucose"}, **extra}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        pytest.param('{"resourceType":"Patient","active":"yes"}', "Patient.active", id="bool-str"),
        pytest.param('{"resourceType":"Patient","active":1}', "Patient.active", id="bool-int"),
        pytest.param('{"resourceType":"Patient","active":"true"}', "Patient.active", id="bool-tr"),
        pytest.param(
            '{"resourceType":"Patient","multipleBirthInteger":"3"}',
            "Patient.multipleBirthInteger",
            id="int-str",
        ),
        pytest.param(
            '{"resourceType":"Patient","multipleBirthInteger":3.0}',
            "Patient.multipleBirthInteger",
            id="int-decimal",
        ),
        pytest.param(
            '{"resourceType":"Observation","status":"final","code":{"text":"g"},'
            '"valueQuantity":{"value":"1.5"}}',
            "Observation.valueQuantity.value",
            id="decimal-str",
        ),
        pytest.param('{"resourceType":"Patient","birthDate":19700101}', "Patient.birthDate",
                     id="date-number"),
        pytest.param('{"resourceType":"Patient","name":[{"given":[true]}]}',
                     "Patient.name[0].given[0]", id="string-bool"),
    ],
)
def test_wrong_json_types_are_structure_errors_at_the_element(body: str, path: str) -> None:
    assert paths(jsonutil.loads(body)) == [("structure", path)]


def test_null_is_rejected_except_in_primitive_arrays_paired_with_a_twin() -> None:
    assert paths({"resourceType": "Patient", "gender": None}) == [("structure", "Patient.gender")]
    assert paths({"resourceType": "Patient", "name": [{"given": ["Ann", None]}]}) == [
        ("structure", "Patient.name[0].given[1]")
    ]
    paired = {
        "resourceType": "Patient",
        "name": [{"given": ["Ann", None], "_given": [None, {"id": "g2"}]}],
    }
    assert paths(paired) == []


def test_decimals_accept_json_numbers_and_keep_their_digits() -> None:
    resource = jsonutil.loads(
        '{"resourceType":"Observation","status":"final","code":{"text":"g"},'
        '"valueQuantity":{"value":1.50},"referenceRange":[{"low":{"value":70}}]}'
    )
    assert paths(resource) == []
    assert b'"value":1.50' in jsonutil.dumps(resource)


def test_integer_is_32_bit_signed() -> None:
    assert paths({"resourceType": "Patient", "multipleBirthInteger": 2147483647}) == []
    assert paths({"resourceType": "Patient", "multipleBirthInteger": 2147483648}) == [
        ("value", "Patient.multipleBirthInteger")
    ]
    huge = jsonutil.loads('{"resourceType":"Patient","multipleBirthInteger":-99999999999999999999}')
    assert paths(huge) == [("value", "Patient.multipleBirthInteger")]
    # positiveInt starts at 1, unsignedInt at 0 (R4 datatypes.html)
    sampled = {"origin": {"value": 0}, "period": 1, "dimensions": 0, "data": "E"}
    assert paths(observation(valueSampledData=sampled)) == [
        ("value", "Observation.valueSampledData.dimensions")
    ]


def test_empty_objects_and_arrays_break_ele_1() -> None:
    assert paths({"resourceType": "Patient", "name": [{}]}) == [("structure", "Patient.name[0]")]
    assert paths({"resourceType": "Patient", "name": []}) == [("structure", "Patient.name")]
    assert paths(observation(valueQuantity={})) == [
        ("structure", "Observation.valueQuantity")
    ]
    assert paths({"resourceType": "Patient", "name": [{"given": [""]}]}) == [
        ("value", "Patient.name[0].given[0]")
    ]


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x0b"])
def test_control_characters_are_rejected(char: str) -> None:
    resource = {"resourceType": "Patient", "name": [{"family": f"Do{char}e"}]}
    assert paths(resource) == [("value", "Patient.name[0].family")]


def test_tab_cr_lf_are_allowed_in_strings() -> None:
    assert paths({"resourceType": "Patient", "name": [{"text": "a\tb\r\nc"}]}) == []


def nested_extensions(levels: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(levels):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    return {"resourceType": "Patient", "extension": [extension]}


def test_nesting_has_a_limit_reported_as_structure() -> None:
    assert paths(nested_extensions(20)) == []
    issues = validation_issues(nested_extensions(200))
    assert [i.code for i in issues] == ["structure"]
    assert str(MAX_DEPTH) in issues[0].diagnostics


def test_contained_resources_are_checked_by_their_own_type() -> None:
    resource = {
        "resourceType": "Patient",
        "contained": [{"resourceType": "Organization", "id": "o", "active": "yes"}],
    }
    assert paths(resource) == [("structure", "Patient.contained[0].active")]


def test_backbone_and_content_reference_elements_are_typed() -> None:
    questionnaire = {
        "resourceType": "Questionnaire",
        "status": "draft",
        "item": [{"linkId": "1", "type": "group", "item": [
            {"linkId": "1.1", "type": "boolean", "required": "no"}
        ]}],
    }
    assert paths(questionnaire) == [("structure", "Questionnaire.item[0].item[0].required")]


@pytest.mark.anyio
async def test_rest_rejects_lax_values_with_their_path(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "Patient", content=b'{"resourceType":"Patient","active":"yes"}', headers=JSON
    )
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.active"]


@pytest.mark.anyio
async def test_rest_deep_nesting_is_400(client: httpx.AsyncClient) -> None:
    deep = await client.post("Patient", content=json.dumps(nested_extensions(200)),
                             headers=JSON)
    assert deep.status_code == 400
    assert deep.json()["issue"][0]["code"] == "structure"


def test_unknown_elements_are_reported_for_r4_types_without_an_r4b_model() -> None:
    # EffectEvidenceSynthesis is R4 only (R4B dropped it), so no model checks it
    synthesis = {"resourceType": "EffectEvidenceSynthesis", "status": "draft",
                 "population": {"reference": "Group/g"}, "exposure": {"reference": "Group/e"},
                 "exposureAlternative": {"reference": "Group/a"}, "colour": "red"}
    assert paths(synthesis) == [("structure", "EffectEvidenceSynthesis.colour")]
    assert paths({"resourceType": "Patient", "name": [{"famly": "x"}]}) == [
        ("structure", "Patient.name[0].famly")
    ]
    assert paths({"resourceType": "Patient", "name": [{"resourceType": "x"}]}) == [
        ("structure", "Patient.name[0].resourceType")
    ]
