"""The cost of the R4 invariant walk (conformance/invariants.py) in validation: a
546-byte lab Observation validated whole (a new id each time, so the incremental path
does not apply), with and without the invariants, and the walk on its own; then a later
version of a 2,000-instance ImagingStudy (the incremental path, as per C-STORE).

Run: nice .venv/bin/python benchmarks/bench_invariants.py
"""

from __future__ import annotations

import itertools
import json
import timeit
from typing import Any

from conformance import invariants, validation

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation", "status": "final",
    "category": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "laboratory"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7",
                         "display": "Glucose [Mass/volume] in Serum or Plasma"}]},
    "subject": {"reference": "Patient/123e4567-e89b-12d3-a456-426614174000"},
    "effectiveDateTime": "2024-01-02T10:00:00+01:00",
    "performer": [{"reference": "Practitioner/abc"}],
    "valueQuantity": {"value": 95, "unit": "mg/dL", "system": "http://unitsofmeasure.org",
                      "code": "mg/dL"},
}


def _best(fn: Any, number: int, repeat: int = 20) -> float:
    """Microseconds per call, best of `repeat` (other work on the machine adds noise)."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    size = len(json.dumps(OBSERVATION, separators=(",", ":")))
    ids = itertools.count()

    def whole() -> None:
        validation.validate({**OBSERVATION, "id": f"o{next(ids)}"}, "Observation")

    real = validation.invariant_issues
    results: dict[str, float] = {}
    for label, hook in (("without", lambda r, models=True: []), ("with", real)) * 2:
        validation.invariant_issues = hook  # type: ignore[assignment]
        whole()
        cost = _best(whole, 300)
        results[label] = min(results.get(label, cost), cost)
    validation.invariant_issues = real
    walk = _best(lambda: invariants.invariant_issues(OBSERVATION), 2000)
    print(f"Observation {size} bytes: validate {results['without']:.0f} us without the "
          f"invariants, {results['with']:.0f} us with; the walk alone {walk:.1f} us")

    instances = [{"uid": f"1.2.3.4.{i}", "number": i, "sopClass": {
        "system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}}
        for i in range(2000)]
    study: dict[str, Any] = {
        "resourceType": "ImagingStudy", "id": "s1", "status": "available",
        "subject": {"reference": "Patient/p"},
        "series": [{"uid": "1.2.3", "instance": instances, "modality": {
            "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}}],
    }
    validation.validate(study, "ImagingStudy")
    grown = {**study, "series": [{**study["series"][0], "instance": [
        *instances, {**instances[0], "uid": "1.2.3.4.99999", "number": 99999}]}]}
    later = _best(lambda: validation.validate(grown, "ImagingStudy"), 5, 5) / 1000
    whole_walk = _best(lambda: invariants.invariant_issues(grown), 5, 5) / 1000
    print(f"ImagingStudy 2,001 instances, later version: validate {later:.2f} ms "
          f"(the walk over the whole study would be {whole_walk:.2f} ms)")


if __name__ == "__main__":
    main()
