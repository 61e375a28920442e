"""Resources per second for search.extract.extract() (the fast path) against the same
extraction with every expression evaluated by fhirpathpy.

    .venv/bin/python benchmarks/bench_extract.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from search.extract import IndexRows, extract, extract_with_fhirpathpy

# A typical lab result as produced from an HL7v2 ORU^R01 OBX segment.
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "obs-hgb-1",
    "meta": {"lastUpdated": "2026-12-04T16:40:00.123456+00:00", "versionId": "1"},
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.72.5.20", "value": "ORD448811-1"}],
    "basedOn": [{"reference": "ServiceRequest/sr-448811"}],
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory",
                    "display": "Laboratory",
                }
            ]
        }
    ],
    "code": {
        "coding": [
            {
                "system": "http://loinc.org",
                "code": "718-7",
                "display": "Hemoglobin [Mass/volume] in Blood",
            }
        ],
        "text": "Hemoglobin",
    },
    "subject": {"reference": "Patient/pat-1001"},
    "encounter": {"reference": "Encounter/enc-77"},
    "effectiveDateTime": "2026-11-30T08:15:00+01:00",
    "issued": "2026-11-30T09:02:11.000+01:00",
    "performer": [{"reference": "Organization/lab-1"}],
    "valueQuantity": {
        "value": 13.2,
        "unit": "g/dL",
        "system": "http://unitsofmeasure.org",
        "code": "g/dL",
    },
    "interpretation": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                    "code": "N",
                }
            ]
        }
    ],
    "referenceRange": [
        {"low": {"value": 12.0, "unit": "g/dL"}, "high": {"value": 16.0, "unit": "g/dL"}}
    ],
    "specimen": {"reference": "Specimen/spec-9"},
}

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "pat-1001",
    "meta": {"lastUpdated": "2026-12-04T16:40:00.123456+00:00", "versionId": "3"},
    "identifier": [
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                ]
            },
            "system": "urn:oid:2.16.840.1.113883.19.5",
            "value": "MRN-0012345",
        }
    ],
    "active": True,
    "name": [
        {"use": "official", "family": "Dupré", "given": ["Anaïs", "Marie"], "prefix": ["Mme"]}
    ],
    "telecom": [
        {"system": "phone", "value": "+33 1 23 45 67 89", "use": "home"},
        {"system": "email", "value": "anais.dupre@example.org"},
    ],
    "gender": "female",
    "birthDate": "1984-07-21",
    "address": [
        {
            "line": ["12 rue des Lilas"],
            "city": "Lyon",
            "postalCode": "69003",
            "country": "FR",
        }
    ],
    "generalPractitioner": [{"reference": "Practitioner/gp-5"}],
    "managingOrganization": {"reference": "Organization/hosp-1"},
}


def rate(function: Callable[[dict[str, Any]], IndexRows], resource: dict[str, Any]) -> float:
    function(resource)  # compile and cache first
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < 1.0:
        for _ in range(100):
            function(resource)
        count += 100
    return count / elapsed


def main() -> None:
    for label, resource in (("lab Observation", OBSERVATION), ("Patient", PATIENT)):
        fast = rate(extract, resource)
        slow = rate(extract_with_fhirpathpy, resource)
        print(
            f"{label:16} fast path {fast:>9,.0f} resources/s   "
            f"fhirpathpy {slow:>7,.0f} resources/s   ({fast / slow:.0f}x)"
        )


if __name__ == "__main__":
    main()
