"""Linked resources for the chain, include and compartment tests: Organizations <-
Patients / Encounters <- Observations <- DiagnosticReports, with reference cycles
(Patient.link both ways, Observation.hasMember both ways)."""

from __future__ import annotations

from typing import Any

LOINC = "http://loinc.org"
HEMOGLOBIN = {"coding": [{"system": LOINC, "code": "718-7", "display": "Hemoglobin"}]}
HEART_RATE = {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]}
BP_PANEL = {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure"}]}


def _ref(target: str) -> dict[str, str]:
    return {"reference": target}


def _obs(oid: str, subject: str, code: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": code,
        "subject": _ref(subject),
        **more,
    }


# Organizations <- Patients / Encounters <- Observations <- DiagnosticReport
RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "org-good", "name": "Good Health Clinic"},
    {
        "resourceType": "Organization",
        "id": "org-acme",
        "name": "Acme Hospital",
        "partOf": _ref("Organization/org-good"),
    },
    {
        "resourceType": "Patient",
        "id": "pat-peter",
        "name": [{"family": "Chalmers", "given": ["Peter"]}],
        "managingOrganization": _ref("Organization/org-good"),
        "link": [{"other": _ref("Patient/pat-anna"), "type": "seealso"}],
    },
    {
        "resourceType": "Patient",
        "id": "pat-anna",
        "name": [{"family": "Levin", "given": ["Anna"]}],
        "managingOrganization": _ref("Organization/org-acme"),
        "link": [{"other": _ref("Patient/pat-peter"), "type": "seealso"}],
    },
    {
        "resourceType": "Patient",
        "id": "pat-smith",
        "name": [{"family": "Smith", "given": ["Peter"]}],
    },
    {"resourceType": "Location", "id": "loc-1", "name": "Peterborough ward"},
    {
        "resourceType": "Encounter",
        "id": "enc-1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": _ref("Patient/pat-peter"),
        "serviceProvider": _ref("Organization/org-good"),
    },
    {
        "resourceType": "Encounter",
        "id": "enc-2",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": _ref("Patient/pat-anna"),
        "serviceProvider": _ref("Organization/org-acme"),
    },
    _obs("obs-1", "Patient/pat-peter", HEMOGLOBIN, encounter=_ref("Encounter/enc-1")),
    _obs("obs-2", "Patient/pat-anna", HEART_RATE, encounter=_ref("Encounter/enc-2")),
    _obs("obs-3", "Patient/pat-smith", HEMOGLOBIN),
    _obs("obs-4", "Location/loc-1", HEART_RATE),
    _obs("obs-5", "Patient/pat-peter", BP_PANEL, hasMember=[_ref("Observation/obs-6")]),
    _obs("obs-6", "Patient/pat-peter", BP_PANEL, hasMember=[_ref("Observation/obs-5")]),
    {
        "resourceType": "DiagnosticReport",
        "id": "dr-1",
        "status": "final",
        "code": HEART_RATE,
        "subject": _ref("Patient/pat-anna"),
        "result": [_ref("Observation/obs-2")],
    },
    {
        "resourceType": "DiagnosticReport",
        "id": "dr-2",
        "status": "preliminary",
        "code": HEMOGLOBIN,
        "subject": _ref("Patient/pat-smith"),
        "result": [_ref("Observation/obs-3")],
    },
]
