"""R4 invariants checked on every write (conformance/invariants.py): reference target
types and format, contained resources (dom-2, dom-3, dom-4, ref-1), ext-1, cpt-2, qty-3,
txt-2, uri whitespace, primitive arrays and their _twins, required elements of the R4
types without an R4B model. Each resource below is refused with a 400 naming the element;
the valid neighbours are stored."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conformance.references import target_types

pytestmark = pytest.mark.anyio

XHTML = "http://www.w3.org/1999/xhtml"


def _obs(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "c"}, **extra}


PATIENT = {"resourceType": "Patient", "id": "p1"}
REFUSED: list[tuple[dict[str, Any], str, str]] = [
    (_obs(subject={"reference": "Medication/x"}), "Observation.subject.reference",
     "Device | Group | Location | Patient, not Medication"),
    (_obs(subject={"reference": "Patient/"}), "Observation.subject.reference",
     "is not a reference"),
    ({"resourceType": "Provenance", "recorded": "2024-01-01T00:00:00Z",
      "agent": [{"who": {"reference": "Practitioner/1"}}],
      "target": [{"reference": "2024-13-45"}]}, "Provenance.target[0].reference",
     "is not a reference"),
    (_obs(contained=[PATIENT], subject={"reference": "#p2"}), "Observation.subject.reference",
     "ref-1"),
    (_obs(contained=[PATIENT]), "Observation.contained[0]", "dom-3"),
    (_obs(contained=[{**PATIENT, "contained": [{"resourceType": "Patient", "id": "p2"}]}],
          subject={"reference": "#p1"}), "Observation.contained[0].contained", "dom-2"),
    (_obs(contained=[{**PATIENT, "meta": {"versionId": "1"}}], subject={"reference": "#p1"}),
     "Observation.contained[0].meta", "dom-4"),
    ({"resourceType": "Patient", "extension": [{"url": "http://x"}]},
     "Patient.extension[0]", "ext-1"),
    ({"resourceType": "Patient", "extension": [
        {"url": "http://x", "valueString": "a", "extension": [{"url": "y", "valueCode": "b"}]}]},
     "Patient.extension[0]", "ext-1"),
    ({"resourceType": "Patient", "telecom": [{"value": "x"}]}, "Patient.telecom[0]", "cpt-2"),
    (_obs(valueQuantity={"value": 1, "code": "mg"}), "Observation.valueQuantity", "qty-3"),
    ({"resourceType": "Patient", "identifier": [{"system": "not a uri", "value": "1"}]},
     "Patient.identifier[0].system", "whitespace"),
    ({"resourceType": "Patient", "name": [{"given": ["a"], "_given": [None, {"id": "x"}]}]},
     "Patient.name[0]._given", "as many entries"),
    ({"resourceType": "Patient", "text": {"status": "generated",
                                          "div": f'<div xmlns="{XHTML}">   </div>'}},
     "Patient.text.div", "txt-2"),
    ({"resourceType": "EffectEvidenceSynthesis"}, "EffectEvidenceSynthesis.status",
     "required"),
    ({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": _obs(contained=[PATIENT], subject={"reference": "#p2"})}]},
     "Bundle.entry[0].resource.subject.reference", "ref-1"),
    ({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
      "period": {"start": "2024-05-01T10:00:00Z", "end": "2024-04-01T10:00:00Z"}},
     "Encounter.period", "per-1"),
    ({"resourceType": "Patient", "identifier": [{"value": "1", "period": {
        "start": "2020", "end": "2019"}}]}, "Patient.identifier[0].period", "per-1"),
]
ACCEPTED: list[dict[str, Any]] = [
    _obs(subject={"reference": "Group/g1"}),
    _obs(subject={"reference": "http://elsewhere.test/fhir/Medication/x"}),
    _obs(contained=[PATIENT], subject={"reference": "#p1"}),
    _obs(contained=[{"resourceType": "Provenance", "recorded": "2024-01-01T00:00:00Z",
                     "agent": [{"who": {"reference": "Practitioner/1"}}],
                     "target": [{"reference": "#"}]}]),  # refers to its container (dom-3)
    {"resourceType": "Patient", "extension": [{"url": "http://x", "valueBoolean": True}],
     "telecom": [{"system": "phone", "value": "1"}],
     "name": [{"given": ["a", "b"], "_given": [None, {"id": "x"}]}]},
    _obs(valueQuantity={"value": 1, "system": "http://unitsofmeasure.org", "code": "mg"}),
    # a Bundle entry is a resource of its own (not contained): its local references and
    # contained resources are its own
    {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": _obs(contained=[PATIENT], subject={"reference": "#p1"})},
        {"resource": {"resourceType": "Patient", "meta": {"versionId": "3"}}}]},
    # same instant in two zones; mixed precisions are not decided (FHIRPath: empty)
    _obs(effectivePeriod={"start": "2024-05-01T12:00:00+02:00", "end": "2024-05-01T10:00:00Z"}),
    _obs(effectivePeriod={"start": "2024-05-01", "end": "2024-05-01T10:00:00Z"}),
]


async def test_each_invariant_is_refused_naming_the_element(client: httpx.AsyncClient) -> None:
    for resource, where, words in REFUSED:
        response = await client.post(resource["resourceType"], json=resource)
        assert response.status_code == 400, (where, response.text)
        issues = response.json()["issue"]
        assert any(where in i["expression"] and words in i["diagnostics"] for i in issues), (
            where, issues)


async def test_valid_neighbours_are_stored(client: httpx.AsyncClient) -> None:
    for resource in ACCEPTED:
        response = await client.post(resource["resourceType"], json=resource)
        assert response.status_code == 201, response.text


def test_target_types_come_from_the_r4_definitions() -> None:
    targets = target_types()
    # R4 Observation.subject: Reference(Patient | Group | Device | Location)
    assert targets["Observation.subject"] == {"Patient", "Group", "Device", "Location"}
    # R4 Encounter.participant.individual: Reference(Practitioner | PractitionerRole |
    # RelatedPerson)
    assert targets["Encounter.participant.individual"] == {
        "Practitioner", "PractitionerRole", "RelatedPerson"}
