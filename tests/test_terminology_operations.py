"""The terminology operations over HTTP, against the examples on the R4 operation pages
(codesystem-operation-lookup.html, valueset-operation-validate-code.html,
codesystem-operation-subsumes.html, valueset-operation-expand.html,
conceptmap-operation-translate.html): the inputs are built here from what those
examples use, the answers are the ones the pages document."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from terminology_backends import store  # noqa: F401 - SQLite and MongoDB (mongomock)

pytestmark = pytest.mark.anyio

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"

# The LOINC concept of the $lookup and $validate-code examples, as the pages show it
# (LOINC 2.48 displays).
LOINC_FRAGMENT = {
    "resourceType": "CodeSystem",
    "id": "loinc-example",
    "url": LOINC,
    "version": "2.48",
    "name": "LOINC",
    "status": "active",
    "content": "fragment",
    "concept": [
        {"code": "1963-8", "display": "Bicarbonate [Moles/volume] in Serum",
         "designation": [{"language": "zh-CN",
                          "value": "碳酸氢盐 [物质的量/体积] 于 血清"}]},
        {"code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma"},
    ],
}  # fmt: skip

# The SNOMED CT concepts of the $subsumes example: 235856003 |Disorder of liver| subsumes
# 3738000 |Viral hepatitis| (intermediate concepts of the real hierarchy left out).
SCT_FRAGMENT = {
    "resourceType": "CodeSystem",
    "id": "sct-example",
    "url": SCT,
    "name": "SNOMED_CT_fragment",
    "status": "active",
    "content": "fragment",
    "hierarchyMeaning": "is-a",
    "concept": [
        {"code": "235856003", "display": "Disorder of liver", "concept": [
            {"code": "3738000", "display": "Viral hepatitis"},
        ]},
        {"code": "302509004", "display": "Entire heart"},
    ],
}  # fmt: skip

# The ConceptMap the $translate example uses (composition-status to v3 ActStatus).
COMPOSITION_STATUS_MAP = {
    "resourceType": "ConceptMap",
    "id": "cm-composition-status-v3",
    "url": "http://hl7.org/fhir/ConceptMap/cm-composition-status-v3",
    "status": "draft",
    "sourceCanonical": "http://hl7.org/fhir/ValueSet/composition-status",
    "targetCanonical": "http://terminology.hl7.org/ValueSet/v3-ActStatus",
    "group": [{
        "source": "http://hl7.org/fhir/composition-status",
        "target": "http://terminology.hl7.org/CodeSystem/v3-ActStatus",
        "element": [
            {"code": "preliminary", "target": [{"code": "active", "equivalence": "equivalent"}]},
            {"code": "final", "target": [{"code": "completed", "equivalence": "wider"}]},
            {"code": "entered-in-error",
             "target": [{"code": "nullified", "equivalence": "equivalent"}]},
        ],
    }],
}  # fmt: skip


def _params(body: dict[str, Any]) -> dict[str, Any]:
    assert body["resourceType"] == "Parameters", body
    out: dict[str, Any] = {}
    for p in body["parameter"]:
        value = p.get("part") or next(v for k, v in p.items() if k.startswith("value"))
        out.setdefault(p["name"], []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


def _parts(part: list[dict[str, Any]]) -> dict[str, Any]:
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in part}


@pytest.fixture
async def tx(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for resource in (LOINC_FRAGMENT, SCT_FRAGMENT, COMPOSITION_STATUS_MAP):
        r = await client.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
        assert r.status_code == 201, r.text
    return client


async def test_lookup_example_get(tx: httpx.AsyncClient) -> None:
    # GET [base]/CodeSystem/$lookup?system=http://loinc.org&code=1963-8, pinned to the
    # posted fragment's version (unpinned, the shipped LOINC content takes precedence)
    r = await tx.get("CodeSystem/$lookup",
                     params={"system": LOINC, "code": "1963-8", "version": "2.48"})
    assert r.status_code == 200, r.text
    out = _params(r.json())
    assert out["name"] == "LOINC"
    assert out["version"] == "2.48"
    assert out["display"] == "Bicarbonate [Moles/volume] in Serum"
    assert _parts(out["designation"]) == {"language": "zh-CN",
                                          "value": "碳酸氢盐 [物质的量/体积] 于 血清"}


async def test_lookup_post_coding_and_display_language(tx: httpx.AsyncClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": LOINC, "code": "1963-8",
                                           "version": "2.48"}},
        {"name": "displayLanguage", "valueCode": "zh"},
    ]}  # fmt: skip
    r = await tx.post("CodeSystem/$lookup", json=body)
    assert r.status_code == 200, r.text
    assert _params(r.json())["display"] == "碳酸氢盐 [物质的量/体积] 于 血清"
    # Accept-Language serves when displayLanguage is absent
    r = await tx.get("CodeSystem/$lookup",
                     params={"system": LOINC, "code": "1963-8", "version": "2.48"},
                     headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})  # fmt: skip
    assert _params(r.json())["display"] == "碳酸氢盐 [物质的量/体积] 于 血清"


async def test_lookup_parent_and_child_properties(tx: httpx.AsyncClient) -> None:
    r = await tx.get("CodeSystem/$lookup", params={"system": SCT, "code": "3738000"})
    props = [_parts(p) for p in _params(r.json())["property"]]
    assert {"code": "parent", "value": "235856003"} in props
    r = await tx.get("CodeSystem/$lookup",
                     params={"system": SCT, "code": "235856003", "property": "child"})
    props = _params(r.json())["property"]
    assert _parts(props) == {"code": "child", "value": "3738000"}  # only the one asked for


@pytest.mark.parametrize(
    ("params", "status", "issue"),
    [
        ({"system": LOINC, "code": "0000-0"}, 404, "not-found"),
        ({"system": "http://example.org/unknown", "code": "1"}, 404, "not-found"),
        ({"system": LOINC}, 400, "required"),
        ({"code": "1963-8"}, 400, "required"),
    ],
)
async def test_lookup_errors(
    tx: httpx.AsyncClient, params: dict[str, str], status: int, issue: str
) -> None:
    r = await tx.get("CodeSystem/$lookup", params=params)
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["code"] == issue


async def test_value_set_validate_code_example(tx: httpx.AsyncClient) -> None:
    # GET [base]/ValueSet/23/$validate-code?system=http://loinc.org&code=1963-8&display=test
    # -> result false, message about the display, display "Bicarbonate [Moles/volume] in Serum"
    vs = {"resourceType": "ValueSet", "id": "23", "url": "http://example.org/fhir/ValueSet/23",
          "status": "active",
          "compose": {"include": [{"system": LOINC, "version": "2.48"}]}}  # fmt: skip
    assert (await tx.put("ValueSet/23", json=vs)).status_code == 201
    r = await tx.get("ValueSet/23/$validate-code",
                     params={"system": LOINC, "code": "1963-8", "display": "test"})
    assert r.status_code == 200, r.text
    out = _params(r.json())
    assert out["result"] is False
    assert "test" in out["message"]
    assert out["display"] == "Bicarbonate [Moles/volume] in Serum"
    r = await tx.get("ValueSet/23/$validate-code", params={"system": LOINC, "code": "1963-8"})
    assert _params(r.json())["result"] is True
    # not in the value set: result false with a message, not an error
    r = await tx.get("ValueSet/23/$validate-code", params={"system": SCT, "code": "3738000"})
    assert r.status_code == 200
    out = _params(r.json())
    assert out["result"] is False and "3738000" in out["message"]


async def test_code_system_validate_code(tx: httpx.AsyncClient) -> None:
    r = await tx.get("CodeSystem/$validate-code",
                     params={"url": LOINC, "code": "2345-7",
                             "display": "Glucose [Mass/volume] in Serum or Plasma"})
    assert _params(r.json()) == {"result": True,
                                 "display": "Glucose [Mass/volume] in Serum or Plasma"}
    r = await tx.get("CodeSystem/loinc-example/$validate-code", params={"code": "9999-9"})
    out = _params(r.json())
    assert r.status_code == 200 and out["result"] is False and "9999-9" in out["message"]
    body = {"resourceType": "Parameters", "parameter": [{"name": "codeableConcept",
            "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "nope"},
                                                {"system": LOINC, "code": "1963-8"}]}}]}
    r = await tx.post("CodeSystem/loinc-example/$validate-code", json=body)
    assert _params(r.json())["result"] is True  # one valid coding is enough


async def test_subsumes_example(tx: httpx.AsyncClient) -> None:
    # GET [base]/CodeSystem/$subsumes?system=http://snomed.info/sct&codeA=235856003&codeB=3738000
    r = await tx.get("CodeSystem/$subsumes",
                     params={"system": SCT, "codeA": "235856003", "codeB": "3738000"})
    assert r.status_code == 200, r.text
    assert _params(r.json()) == {"outcome": "subsumes"}
    r = await tx.get("CodeSystem/sct-example/$subsumes",
                     params={"codeA": "3738000", "codeB": "235856003"})
    assert _params(r.json()) == {"outcome": "subsumed-by"}
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "codingA", "valueCoding": {"system": SCT, "code": "302509004"}},
        {"name": "codingB", "valueCoding": {"system": SCT, "code": "3738000"}}]}
    r = await tx.post("CodeSystem/$subsumes", json=body)
    assert _params(r.json()) == {"outcome": "not-subsumed"}
    r = await tx.get("CodeSystem/$subsumes", params={"system": SCT, "codeA": "1", "codeB": "2"})
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["codeA"]


async def test_translate_example(tx: httpx.AsyncClient) -> None:
    # GET [base]/ConceptMap/$translate?system=http://hl7.org/fhir/composition-status
    #   &code=preliminary&source=http://hl7.org/fhir/ValueSet/composition-status
    #   &target=http://terminology.hl7.org/ValueSet/v3-ActStatus
    r = await tx.get("ConceptMap/$translate", params={
        "system": "http://hl7.org/fhir/composition-status", "code": "preliminary",
        "source": "http://hl7.org/fhir/ValueSet/composition-status",
        "target": "http://terminology.hl7.org/ValueSet/v3-ActStatus"})  # fmt: skip
    assert r.status_code == 200, r.text
    out = _params(r.json())
    assert out["result"] is True
    match = _parts(out["match"])
    assert match["equivalence"] == "equivalent"
    assert match["concept"] == {"system": "http://terminology.hl7.org/CodeSystem/v3-ActStatus",
                                "code": "active"}
    assert match["source"] == "http://hl7.org/fhir/ConceptMap/cm-composition-status-v3"


async def test_translate_reverse_and_no_match(tx: httpx.AsyncClient) -> None:
    r = await tx.get("ConceptMap/cm-composition-status-v3/$translate", params={
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActStatus", "code": "completed",
        "reverse": "true"})  # fmt: skip
    match = _parts(_params(r.json())["match"])
    # final -> completed is "wider"; read backwards it is "narrower"
    assert match["equivalence"] == "narrower"
    assert match["concept"] == {"system": "http://hl7.org/fhir/composition-status",
                                "code": "final"}
    r = await tx.get("ConceptMap/$translate", params={
        "system": "http://hl7.org/fhir/composition-status", "code": "amended"})
    out = _params(r.json())
    assert r.status_code == 200 and out["result"] is False and "amended" in out["message"]


async def test_translate_with_unknown_map_is_404(tx: httpx.AsyncClient) -> None:
    r = await tx.get("ConceptMap/$translate", params={
        "url": "http://example.org/ConceptMap/none", "system": "http://x", "code": "1"})
    assert r.status_code == 404 and r.json()["issue"][0]["code"] == "not-found"
    r = await tx.get("ConceptMap/$translate", params={
        "url": COMPOSITION_STATUS_MAP["url"], "system": "http://hl7.org/fhir/composition-status",
        "code": "final"})
    assert r.status_code == 200
    assert _parts(_params(r.json())["match"])["equivalence"] == "wider"


async def test_translate_sees_a_map_written_after_the_first_call(tx: httpx.AsyncClient) -> None:
    params = {"system": "http://hl7.org/fhir/composition-status", "code": "amended"}
    assert _params((await tx.get("ConceptMap/$translate", params=params)).json())[
        "result"] is False
    changed = {**COMPOSITION_STATUS_MAP}
    changed["group"] = [{**COMPOSITION_STATUS_MAP["group"][0], "element": [
        {"code": "amended", "target": [{"code": "active", "equivalence": "equivalent"}]}]}]
    assert (await tx.put("ConceptMap/cm-composition-status-v3", json=changed)).status_code == 200
    assert _params((await tx.get("ConceptMap/$translate", params=params)).json())[
        "result"] is True


async def test_expand_with_filter_and_paging(tx: httpx.AsyncClient) -> None:
    r = await tx.get("ValueSet/$expand", params={"url": f"{SCT}?fhir_vs", "filter": "hepat"})
    assert r.status_code == 200, r.text
    expansion = r.json()["expansion"]
    assert expansion["total"] == 1
    assert expansion["contains"] == [{"system": SCT, "code": "3738000",
                                      "display": "Viral hepatitis"}]
    r = await tx.get("ValueSet/$expand",
                     params={"url": f"{SCT}?fhir_vs=isa/235856003", "count": "1", "offset": "1"})
    expansion = r.json()["expansion"]
    assert expansion["total"] == 2 and expansion["offset"] == 1
    assert [c["code"] for c in expansion["contains"]] == ["3738000"]


async def test_expand_posted_value_set_with_compose(tx: httpx.AsyncClient) -> None:
    vs = {"resourceType": "ValueSet", "status": "active", "compose": {
        "include": [{"system": SCT, "filter": [
            {"property": "concept", "op": "is-a", "value": "235856003"}]},
            {"system": LOINC, "concept": [{"code": "2345-7", "display": "Glucose"}]}],
        "exclude": [{"system": SCT, "concept": [{"code": "235856003"}]}]}}  # fmt: skip
    body = {"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": vs}]}
    r = await tx.post("ValueSet/$expand", json=body)
    assert r.status_code == 200, r.text
    contains = r.json()["expansion"]["contains"]
    assert [(c["system"], c["code"], c["display"]) for c in contains] == [
        (SCT, "3738000", "Viral hepatitis"), (LOINC, "2345-7", "Glucose")]


async def test_expand_unknown_value_set_is_404(tx: httpx.AsyncClient) -> None:
    r = await tx.get("ValueSet/$expand", params={"url": "http://example.org/ValueSet/none"})
    assert r.status_code == 404
    assert r.json()["issue"][0]["code"] == "not-found"
    r = await tx.get("ValueSet/nothing-here/$expand")
    assert r.status_code == 404


async def test_implicit_value_set_of_an_unknown_system_is_404_naming_the_url(
        tx: httpx.AsyncClient) -> None:
    # R4 implicit value set (<system>?fhir_vs) of a system the server does not know: the
    # client sent only the url, so the 404 names it, not a compose element it never sent
    url = "http://nope.example/cs?fhir_vs"
    for op, params in (("$expand", {"url": url}),
                       ("$validate-code", {"url": url, "system": "http://nope.example/cs",
                                           "code": "x"})):
        r = await tx.get(f"ValueSet/{op}", params=params)
        assert r.status_code == 404, (op, r.text)
        issue = r.json()["issue"][0]
        assert issue["code"] == "not-found"
        assert url in issue["diagnostics"]
        assert "compose" not in str(issue.get("expression"))
    # a known system's implicit value set still expands
    r = await tx.get("ValueSet/$expand", params={"url": f"{SCT}?fhir_vs=isa/235856003"})
    assert r.status_code == 200, r.text


async def test_code_system_written_later_is_seen(tx: httpx.AsyncClient) -> None:
    changed = {**SCT_FRAGMENT, "concept": [*SCT_FRAGMENT["concept"],
                                          {"code": "22298006", "display": "Myocardial infarction"}]}
    assert (await tx.put("CodeSystem/sct-example", json=changed)).status_code == 200
    r = await tx.get("CodeSystem/$lookup", params={"system": SCT, "code": "22298006"})
    assert _params(r.json())["display"] == "Myocardial infarction"
    assert (await tx.delete("CodeSystem/sct-example")).status_code in (200, 204)
    r = await tx.get("CodeSystem/$lookup", params={"system": SCT, "code": "22298006"})
    assert r.status_code == 404


async def test_operation_definitions_and_capability(tx: httpx.AsyncClient) -> None:
    names = {op["name"] for op in (await tx.get("metadata")).json()["rest"][0]["operation"]}
    assert {"lookup", "validate-code", "expand", "translate", "subsumes"} <= names
    for name, code in (("CodeSystem-lookup", "lookup"), ("ValueSet-expand", "expand"),
                       ("ConceptMap-translate", "translate"), ("validate-code", "validate-code"),
                       ("CodeSystem-subsumes", "subsumes"), ("lookup", "lookup")):
        r = await tx.get(f"OperationDefinition/{name}")
        assert r.status_code == 200, name
        assert r.json()["code"] == code
    expand = (await tx.get("OperationDefinition/ValueSet-expand")).json()
    params = {(p["name"], p["use"]) for p in expand["parameter"]}
    assert {("filter", "in"), ("count", "in"), ("offset", "in"), ("return", "out")} <= params


async def test_bad_parameters_body(tx: httpx.AsyncClient) -> None:
    r = await tx.post("CodeSystem/$lookup", json={"resourceType": "Patient"})
    assert r.status_code == 400
    r = await tx.get("ValueSet/$expand", params={"url": f"{SCT}?fhir_vs", "count": "-1"})
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["count"]
