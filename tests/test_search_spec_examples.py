"""Cases from the R4 search page (search.html), each with its exact result set over a
fixture written for it. Where the spec's example names a code or unit, the fixture has
resources that must match and near misses that must not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.search_index_db import SearchDB

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ACME = "http://acme.org/patient"


def _patient(pid: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, **fields}


def _quantity(value: float, code: str, system: str | None = UCUM) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value, "unit": code, "code": code}
    if system is not None:
        quantity["system"] = system
    return quantity


def _observation(oid: str, code: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        **fields,
    }


def _component(code: str, value: float) -> dict[str, Any]:
    return {"code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": _quantity(value, "mm[Hg]")}  # fmt: skip


PATIENTS = [
    _patient("p1", birthDate="2010-06-15", gender="female",
             name=[{"family": "Smith", "given": ["Eve"]}],
             identifier=[{"system": ACME, "value": "2345"}]),
    _patient("p2", birthDate="2011-12-31", gender="female",
             name=[{"family": "Jones", "given": ["Evelyn"]}],
             identifier=[{"system": ACME, "value": "2346"}]),
    _patient("p3", birthDate="2012-01-01", gender="male", name=[{"given": ["Steve"]}],
             identifier=[{"system": "http://other.org/patient", "value": "2345"}]),
    _patient("p4", birthDate="2009-12-31", name=[{"given": ["Ève"], "family": "Durand"}]),
    _patient("p5", gender="other", name=[{"family": "王", "given": ["小明"], "text": "王小明"}]),
]  # fmt: skip

OBSERVATIONS = [
    _observation("o1", "2339-0", valueQuantity=_quantity(5.4, "mg")),
    _observation("o2", "2339-0", valueQuantity=_quantity(0.0054, "g")),  # = 5.4 mg
    _observation("o3", "2339-0", valueQuantity=_quantity(5.4, "mg", system=None)),
    _observation("o4", "2339-0", valueQuantity=_quantity(6, "mg")),
    _observation("o5", "85354-9", component=[_component("8480-6", 55), _component("8462-4", 40)]),
    _observation("o6", "85354-9", component=[_component("8480-6", 120), _component("8462-4", 50)]),
    _observation("o7", "12907-2", valueQuantity=_quantity(155, "mmol/L")),
    _observation("o8", "12907-2", valueQuantity=_quantity(140, "mmol/L")),
    _observation("o9", "12907-2", valueQuantity=_quantity(0.152, "mol/L")),  # = 152 mmol/L
    _observation("o10", "2345-7", valueQuantity=_quantity(100, "mg/dL")),  # = 1 g/L
    _observation("o11", "2345-7", valueQuantity=_quantity(5, "[IU]/L")),  # arbitrary unit
    _observation("o12", "3016-3", valueQuantity=_quantity(2.5, "m[IU]/L")),  # = 2.5 u[IU]/mL
]  # fmt: skip


def _risk(rid: str, probability: Any) -> dict[str, Any]:
    key = "probabilityDecimal" if not isinstance(probability, dict) else "probabilityRange"
    return {"resourceType": "RiskAssessment", "id": rid, "status": "final",
            "subject": {"reference": "Patient/p1"}, "prediction": [{key: probability}]}  # fmt: skip


RISKS = [
    _risk("r1", 0.9),
    _risk("r2", 0.8),
    _risk("r3", 0.5),
    _risk("r4", 0.84),
    _risk("r5", {"low": {"value": 0.2}, "high": {"value": 0.4}}),
]

VALUE_SETS = [
    {"resourceType": "ValueSet", "id": "v1", "status": "active",
     "url": "http://acme.org/fhir/ValueSet/123"},
    {"resourceType": "ValueSet", "id": "v2", "status": "active",
     "url": "http://acme.org/fhir/ValueSet/124"},
    {"resourceType": "ValueSet", "id": "v3", "status": "active",
     "url": "http://example.org/fhir/ValueSet/123"},
]  # fmt: skip


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchDB]:
    database = SearchDB(Path(tmp_path_factory.mktemp("spec")) / "search.db")
    database.conn.execute("BEGIN")
    for patient in PATIENTS:
        database.add_json(patient)
    for month, observation in enumerate(OBSERVATIONS, start=1):
        # o1 2010-01-01 ... o12 2010-12-01: _lastUpdated=gt2010-10-01 finds o10 (its day
        # is not after 2010-10-01, its instant is: gt compares the end of the day), o11, o12
        database.add_json(observation, last_updated=f"2010-{month:02d}-01T12:00:00.000000+00:00")
    for resource in (*RISKS, *VALUE_SETS):
        database.add_json(resource)
    database.conn.execute("COMMIT")
    yield database
    database.conn.close()


CASES = [
    # search.html#date: a range by two ANDed prefixes
    ("Patient", "birthdate=ge2010-01-01&birthdate=le2011-12-31", {"p1", "p2"}),
    ("Patient", "birthdate=2010", {"p1"}),
    ("Patient", "birthdate=lt2010-01-01", {"p4"}),
    ("Patient", "birthdate:missing=true", {"p5"}),
    # search.html#string: starts-with, case- and accent-insensitive; all name parts
    ("Patient", "given=eve", {"p1", "p2", "p4"}),
    ("Patient", "given:exact=Eve", {"p1"}),
    ("Patient", "name:contains=ve", {"p1", "p2", "p3", "p4"}),
    ("Patient", "name=王", {"p5"}),
    ("Patient", "given=小", {"p5"}),
    ("Patient", "name=smith,durand", {"p1", "p4"}),
    # search.html#token
    ("Patient", f"identifier={ACME}|2345", {"p1"}),
    ("Patient", "identifier=2345", {"p1", "p3"}),
    ("Patient", f"identifier={ACME}|", {"p1", "p2"}),
    ("Patient", "gender:not=male", {"p1", "p2", "p4", "p5"}),
    ("Patient", "gender=male,other", {"p3", "p5"}),
    ("Patient", "_id=p1,p3", {"p1", "p3"}),
    # search.html#quantity
    ("Observation", f"value-quantity=5.4|{UCUM}|mg", {"o1", "o2"}),
    ("Observation", "value-quantity=5.4||mg", {"o1", "o3"}),
    ("Observation", "value-quantity=5.4", {"o1", "o3"}),
    ("Observation", f"value-quantity=le5.4|{UCUM}|mg", {"o1", "o2"}),
    ("Observation", f"value-quantity=gt5.4|{UCUM}|mg", {"o4"}),
    ("Observation", f"value-quantity=5.40e-3|{UCUM}|g", {"o1", "o2"}),
    ("Observation", f"value-quantity=ap5|{UCUM}|mg", {"o1", "o2"}),
    ("Observation", f"value-quantity=1|{UCUM}|g/L", {"o10"}),
    ("Observation", f"value-quantity=5|{UCUM}|[IU]/L", {"o11"}),
    # UCUM 4.5: an arbitrary unit scales exactly by prefixes and other units, but compares
    # only with the same arbitrary unit ([IU] never matches [arb'U])
    ("Observation", f"value-quantity=2.5|{UCUM}|u[IU]/mL", {"o12"}),
    ("Observation", f"value-quantity=0.005|{UCUM}|[IU]/mL", {"o11"}),
    ("Observation", f"value-quantity=gt0.001|{UCUM}|[IU]/mL", {"o11"}),
    ("Observation", f"value-quantity=gt0|{UCUM}|[IU]/L", {"o11", "o12"}),
    ("Observation", f"value-quantity=5|{UCUM}|[arb'U]/L", set()),  # another atom
    ("Observation", "value-quantity=5||notaunit", set()),  # not UCUM: matched as it is
    ("Observation", "value-quantity:missing=true", {"o5", "o6"}),
    # search.html#composite
    ("Observation", f"component-code-value-quantity={LOINC}|8480-6$lt60", {"o5"}),
    ("Observation", f"component-code-value-quantity={LOINC}|8462-4$lt60", {"o5", "o6"}),
    ("Observation", f"code-value-quantity={LOINC}|12907-2$ge150|{UCUM}|mmol/L", {"o7", "o9"}),
    ("Observation", f"code-value-quantity={LOINC}|2339-0$gt5.4", {"o4"}),
    ("Observation", f"combo-code-value-quantity={LOINC}|8480-6$gt100", {"o6"}),
    # without a unit only the numbers count: 0.152 mol/L is below 150
    ("Observation", f"code-value-quantity={LOINC}|2339-0$gt5.4,{LOINC}|12907-2$lt150",
     {"o4", "o8", "o9"}),
    # search.html#lastUpdated: the 1st of October ends at midnight; o10 is updated at noon
    ("Observation", "_lastUpdated=gt2010-10-01", {"o11", "o12"}),
    ("Observation", "_lastUpdated=ge2010-10-01", {"o10", "o11", "o12"}),
    # search.html#number
    ("RiskAssessment", "probability=gt0.8", {"r1", "r4"}),
    ("RiskAssessment", "probability=0.8", {"r2", "r4"}),
    ("RiskAssessment", "probability=0.80", {"r2"}),
    ("RiskAssessment", "probability=lt0.5", {"r5"}),
    ("RiskAssessment", "probability=le0.5", {"r3", "r5"}),
    ("RiskAssessment", "probability=ne0.8", {"r1", "r3", "r5"}),
    ("RiskAssessment", "probability=sa0.8", {"r1"}),
    ("RiskAssessment", "probability=eb0.5", {"r5"}),
    ("RiskAssessment", "probability=ap0.8", {"r2", "r4"}),
    ("RiskAssessment", "probability=ap0.5", {"r3"}),
    # search.html#uri
    ("ValueSet", "url=http://acme.org/fhir/ValueSet/123", {"v1"}),
    ("ValueSet", "url:below=http://acme.org/fhir/", {"v1", "v2"}),
    ("ValueSet", "url:above=http://acme.org/fhir/ValueSet/123/_history/5", {"v1"}),
]


@pytest.mark.parametrize(("resource_type", "query", "expected"), CASES)
def test_spec_example(db: SearchDB, resource_type: str, query: str, expected: set[str]) -> None:
    assert db.found(resource_type, query) == expected
