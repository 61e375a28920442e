"""Resources from the R4 specification's examples, shared by the REST and Bundle tests."""

from __future__ import annotations

import copy
from typing import Any

# The R4 specification's Patient example "example" (patient-example.json), abridged.
PATIENT_EXAMPLE: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "example",
    "identifier": [
        {
            "use": "usual",
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                ]
            },
            "system": "urn:oid:1.2.36.146.595.217.0.1",
            "value": "12345",
            "period": {"start": "2001-05-06"},
            "assigner": {"display": "Acme Healthcare"},
        }
    ],
    "active": True,
    "name": [
        {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
        {"use": "usual", "given": ["Jim"]},
    ],
    "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work", "rank": 1}],
    "gender": "male",
    "birthDate": "1974-12-25",
    "deceasedBoolean": False,
    "address": [
        {
            "use": "home",
            "line": ["534 Erewhon St"],
            "city": "PleasantVille",
            "district": "Rainbow",
            "state": "Vic",
            "postalCode": "3999",
        }
    ],
    "managingOrganization": {"reference": "Organization/1"},
}


def patient(**changes: Any) -> dict[str, Any]:
    """A fresh copy of the example Patient with `changes` applied."""
    resource = copy.deepcopy(PATIENT_EXAMPLE)
    resource.update(changes)
    return resource
