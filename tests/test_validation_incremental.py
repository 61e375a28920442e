"""A later version of a resource is checked only where it differs from the version
validated before it (conformance/validation.py), with the same verdicts and paths."""

from __future__ import annotations

import copy
from typing import Any

from conformance import validation
from conformance.validation import validation_issues

CT = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}
CT_IMAGE = {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}


def _instance(number: Any) -> dict[str, Any]:
    return {"uid": f"1.2.840.113619.2.1.{number}", "sopClass": CT_IMAGE, "number": number}


def _study(study_id: str, count: int) -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "id": study_id,
        "status": "available",
        "subject": {"reference": "Patient/p1"},
        "series": [{
            "uid": "1.2.840.113619.2.1",
            "modality": CT,
            "instance": [_instance(n) for n in range(1, count + 1)],
        }],
    }  # fmt: skip


def _found(resource: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i.code, i.expression[0]) for i in validation_issues(resource)]


def test_a_grown_study_is_valid_and_a_bad_new_instance_is_reported_at_its_path() -> None:
    study = _study("inc-1", 30)
    assert _found(study) == []
    grown = copy.deepcopy(study)
    grown["series"][0]["instance"].append(_instance(31))
    assert _found(grown) == []
    bad = copy.deepcopy(grown)
    bad["series"][0]["instance"].append({**_instance(32), "number": "32"})  # string, not int
    assert _found(bad) == [
        ("structure", "ImagingStudy.series[0].instance[31].number"),
    ]


def test_a_changed_entry_at_a_known_position_is_checked() -> None:
    study = _study("inc-2", 5)
    assert _found(study) == []
    changed = copy.deepcopy(study)
    changed["series"][0]["instance"][2]["sopClass"] = {"system": "urn:ietf:rfc:3986"}
    changed["series"][0]["instance"][3]["bogus"] = True
    assert _found(changed) == [
        ("structure", "ImagingStudy.series[0].instance[3].bogus"),
    ]
    model_only = copy.deepcopy(study)
    del model_only["series"][0]["instance"][4]["uid"]  # required (1..1): only the model checks
    issues = validation_issues(model_only)
    assert [(i.code, i.expression[0]) for i in issues] == [
        ("value", "ImagingStudy.series[0].instance[4].uid")
    ]


def test_what_was_validated_is_a_copy_of_the_callers_objects() -> None:
    study = _study("inc-3", 3)
    assert _found(study) == []
    # the caller changes its object afterwards: the change must still be checked
    study["series"][0]["instance"][0]["number"] = "one"
    assert _found(study) == [("structure", "ImagingStudy.series[0].instance[0].number")]


def test_a_list_whose_entries_all_repeat_keeps_one_for_the_required_checks() -> None:
    validation._recent.clear()
    study = _study("inc-4", 2)
    assert _found(study) == []
    again = copy.deepcopy(study)
    del again["status"]  # required element of the resource itself
    assert _found(again) == [("value", "ImagingStudy.status")]
    kept = validation._novel(study, study)
    assert len(kept["series"]) == 1 and len(kept["series"][0]["instance"]) == 1


def test_primitive_arrays_and_their_twins_are_checked_whole() -> None:
    ext = {"extension": [{"url": "http://example.org/why", "valueString": "unknown"}]}
    before = {"resourceType": "Patient", "id": "inc-5",
              "name": [{"given": [None, "Ann"], "_given": [ext, ext]}]}  # fmt: skip
    assert _found(before) == []
    after = {"resourceType": "Patient", "id": "inc-5",
             "name": [{"given": [None, "Bea"], "_given": [None, ext]}]}  # fmt: skip
    found = _found(after)
    assert ("structure", "Patient.name[0].given[0]") in found
    assert found == [(i.code, i.expression[0]) for i in validation._full_issues(after)]


def test_contained_resources_are_kept_whole() -> None:
    before = {
        "resourceType": "Observation", "id": "inc-6", "status": "final",
        "code": {"text": "x"},
        "contained": [{"resourceType": "Patient", "id": "c1"}],
        "subject": {"reference": "#c1"},
    }  # fmt: skip
    kept = validation._novel(before, before)
    assert kept["contained"] == before["contained"]
