"""Search parameter types and their edges: escapes, :missing on every type, bad input,
injection attempts, accents and non-Latin scripts, and index use (EXPLAIN QUERY PLAN)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fhir_server.errors import FHIRError
from search import query as query_module
from search.query import parse_search
from search.units import canonical_unit, to_canonical
from search.values import date_range
from tests.search_index_db import SearchDB

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
USAGE = "http://terminology.hl7.org/CodeSystem/usage-context-type"
SCT = "http://snomed.info/sct"

RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "comma", "name": [{"family": "Smith, Jr", "given": ["A|B"]}],
     "identifier": [{"system": "urn:s", "value": "a,b"}, {"system": "urn:s|x", "value": "c"}],
     "birthDate": "2000-01-01", "gender": "male"},
    {"resourceType": "Patient", "id": "slash", "name": [{"family": "Back\\slash"}],
     "identifier": [{"system": "urn:s", "value": "a\\b"}]},
    {"resourceType": "Patient", "id": "dollar", "name": [{"family": "Cash$Money"}],
     "generalPractitioner": [{"reference": "Practitioner/dr"}]},
    {"resourceType": "Patient", "id": "zhang", "name": [{"text": "张伟", "family": "张",
     "given": ["伟"]}], "address": [{"city": "北京", "line": ["长安街 1号"]}]},
    {"resourceType": "Patient", "id": "accent", "name": [{"family": "Ødegård", "given": ["Zoë"]}],
     "address": [{"city": "São Paulo", "postalCode": "01000-000", "country": "BR"}]},
    # a Chinese name without name.text; an organization known by its identifier only
    {"resourceType": "Patient", "id": "wang", "name": [{"family": "王", "given": ["建华"]}],
     "managingOrganization": {"identifier": {"system": "urn:org", "value": "ORG1"}}},
    {"resourceType": "Patient", "id": "empty"},
    {"resourceType": "Observation", "id": "q1", "status": "final",
     "code": {"coding": [{"system": LOINC, "code": "a$b"}]},
     "subject": {"reference": "Patient/comma"},
     "valueQuantity": {"value": 100, "system": UCUM, "code": "mg/dL", "unit": "mg/dL"}},
    {"resourceType": "Observation", "id": "q2", "status": "final",
     "code": {"coding": [{"system": LOINC, "code": "x"}]},
     "valueQuantity": {"value": 37, "system": UCUM, "code": "Cel", "unit": "°C"}},
    {"resourceType": "Observation", "id": "q3", "status": "final",
     "code": {"coding": [{"system": LOINC, "code": "x"}]},
     "valueQuantity": {"value": 98.6, "system": UCUM, "code": "[degF]", "unit": "°F"}},
    {"resourceType": "Observation", "id": "q4", "status": "final",
     "code": {"coding": [{"system": LOINC, "code": "x"}]},
     "valueQuantity": {"value": 3, "unit": "tablets"}},
    {"resourceType": "RiskAssessment", "id": "r1", "status": "final",
     "subject": {"reference": "Patient/comma"}, "prediction": [{"probabilityDecimal": 0.25}]},
    {"resourceType": "RiskAssessment", "id": "r2", "status": "final",
     "subject": {"reference": "Patient/comma"}},
    {"resourceType": "ValueSet", "id": "v1", "status": "active", "url": "urn:oid:1.2,3",
     "useContext": [
         {"code": {"system": USAGE, "code": "focus"},
          "valueCodeableConcept": {"coding": [{"system": SCT, "code": "363346000"}]}},
         {"code": {"system": USAGE, "code": "age"},
          "valueQuantity": {"value": 18, "system": UCUM, "code": "a", "unit": "years"}},
     ]},
    {"resourceType": "ValueSet", "id": "v2", "status": "active"},
    # a subject known by its identifier only; a Period whose end is before its start
    # (per-1 broken): searched as the hull of its ends, [2020-02-01, 2020-06-01]
    {"resourceType": "Encounter", "id": "enc1", "status": "finished",
     "subject": {"identifier": {"system": "urn:mrn", "value": "MRN-42"}},
     "period": {"start": "2020-06-01", "end": "2020-02-01"}},
    {"resourceType": "Encounter", "id": "enc2", "status": "finished",
     "subject": {"reference": "Patient/wang",
                 "identifier": {"system": "urn:mrn", "value": "MRN-7"}},
     "period": {"start": "2021-01-01T08:00:00Z", "end": "2021-01-01T09:00:00Z"}},
]  # fmt: skip


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchDB]:
    database = SearchDB(Path(tmp_path_factory.mktemp("types")) / "search.db")
    database.conn.execute("BEGIN")
    for resource in RESOURCES:
        database.add_json(resource)
    database.conn.execute("COMMIT")
    yield database
    database.conn.close()


@pytest.mark.parametrize(
    ("resource_type", "params", "expected"),
    [
        # search.html#escaping: \, \| \$ \\ are the characters themselves
        ("Patient", [("identifier", "urn:s|a\\,b")], {"comma"}),
        ("Patient", [("identifier", "urn:s|a,b")], set()),  # an OR of "urn:s|a" and "b"
        ("Patient", [("identifier", "urn:s\\|x|c")], {"comma"}),
        ("Patient", [("identifier", "urn:s|a\\\\b")], {"slash"}),
        ("Patient", [("family", "smith\\, jr")], {"comma"}),
        ("Patient", [("family", "smith\\,"), ("family", "back\\\\")], set()),
        ("Patient", [("family", "back\\\\")], {"slash"}),
        ("Patient", [("family", "cash\\$")], {"dollar"}),
        ("Patient", [("given:exact", "A\\|B")], {"comma"}),
        ("Observation", [("code", f"{LOINC}|a\\$b")], {"q1"}),
        ("Observation", [("code-value-quantity", f"{LOINC}|a\\$b$100||mg/dL")], {"q1"}),
        ("ValueSet", [("url", "urn:oid:1.2\\,3")], {"v1"}),
        # composites beyond Observation, with components from the R4 definitions
        ("ValueSet", [("context-type-value", f"{USAGE}|focus${SCT}|363346000")], {"v1"}),
        ("ValueSet", [("context-type-value", f"{USAGE}|age${SCT}|363346000")], set()),
        ("ValueSet", [("context-type-quantity", f"{USAGE}|age$ge18|{UCUM}|a")], {"v1"}),
        ("ValueSet", [("context-type-quantity", f"{USAGE}|age$gt18|{UCUM}|a")], set()),
        ("ValueSet", [("context-type-quantity", f"{USAGE}|age$ge216|{UCUM}|mo")], {"v1"}),
        # non-Latin scripts and accents: starts-with on every part of names and addresses
        ("Patient", [("name", "张")], {"zhang"}),
        ("Patient", [("name", "张伟")], {"zhang"}),
        ("Patient", [("given", "伟")], {"zhang"}),
        ("Patient", [("address", "北京")], {"zhang"}),
        ("Patient", [("address", "长安")], {"zhang"}),
        ("Patient", [("name:contains", "伟")], {"zhang"}),
        ("Patient", [("family", "odegard")], {"accent"}),
        ("Patient", [("given", "ZOE")], {"accent"}),
        ("Patient", [("address", "sao")], {"accent"}),
        ("Patient", [("address-city", "SÃO PAULO")], {"accent"}),
        ("Patient", [("address-postalcode", "01000")], {"accent"}),
        ("Patient", [("family:exact", "ødegård")], set()),
        # a CJK name is written family then given, without a space: name=王建华 finds
        # family 王 + given 建华 (the zhang Patient has it as name.text)
        ("Patient", [("name", "王建华")], {"wang"}),
        ("Patient", [("name", "王建")], {"wang"}),
        ("Patient", [("name:exact", "王建华")], {"wang"}),
        ("Patient", [("name", "建华王")], set()),
        ("Patient", [("family", "王建华")], set()),
        ("Patient", [("given", "王建华")], set()),
        # reference :identifier matches Reference.identifier as a token (search.html)
        ("Patient", [("organization:identifier", "urn:org|ORG1")], {"wang"}),
        ("Patient", [("organization:identifier", "ORG1")], {"wang"}),
        ("Patient", [("organization:identifier", "urn:other|ORG1")], set()),
        ("Patient", [("organization", "ORG1")], set()),
        ("Encounter", [("subject:identifier", "urn:mrn|MRN-42")], {"enc1"}),
        ("Encounter", [("patient:identifier", "urn:mrn|MRN-7")], {"enc2"}),
        ("Encounter", [("subject:identifier", "urn:mrn|MRN-42,urn:mrn|MRN-7")], {"enc1", "enc2"}),
        ("Encounter", [("subject:identifier", "urn:mrn|"), ("subject", "Patient/wang")], {"enc2"}),
        ("Encounter", [("subject:identifier", "|MRN-42")], set()),
        ("Encounter", [("subject.organization:identifier", "urn:org|ORG1")], {"enc2"}),
        ("Patient", [("_has:Encounter:subject:subject:identifier", "urn:mrn|MRN-7")], {"wang"}),
        # a reversed Period is found as its hull, by the date-range shortcut too
        ("Encounter", [("date", "2020")], {"enc1"}),
        ("Encounter", [("date", "ge2020-05-15")], {"enc1", "enc2"}),
        ("Encounter", [("date", "lt2020-03")], {"enc1"}),
        ("Encounter", [("date", "2020-04")], set()),
        ("Encounter", [("date", "ge2020-03-01"), ("date", "le2020-03-31")], {"enc1"}),
        ("Encounter", [("subject:identifier", "urn:mrn|MRN-42"), ("date", "2020")], {"enc1"}),
        # quantity: temperatures convert with their offset (37 Cel = 98.6 [degF])
        ("Observation", [("value-quantity", f"37|{UCUM}|Cel")], {"q2", "q3"}),
        ("Observation", [("value-quantity", f"310.15|{UCUM}|K")], {"q2", "q3"}),
        ("Observation", [("value-quantity", f"ge1|{UCUM}|g/L")], {"q1"}),
        ("Observation", [("value-quantity", f"lt1|{UCUM}|g/L")], set()),
        # a unit that is no UCUM code is compared only with the same unit
        ("Observation", [("value-quantity", "3||tablets")], {"q4"}),
        ("Observation", [("value-quantity", "ne37||Cel")], set()),
        ("Observation", [("value-quantity", "ne100")], {"q2", "q3", "q4"}),
    ],
)
def test_values(
    db: SearchDB, resource_type: str, params: list[tuple[str, str]], expected: set[str]
) -> None:
    assert set(db.search(resource_type, params)) == expected


@pytest.mark.parametrize(
    ("resource_type", "name", "has", "lacks"),
    [
        ("Patient", "identifier", {"comma", "slash"},
         {"dollar", "zhang", "accent", "empty", "wang"}),
        ("Patient", "family", {"comma", "slash", "dollar", "zhang", "accent", "wang"}, {"empty"}),
        ("Patient", "birthdate", {"comma"},
         {"slash", "dollar", "zhang", "accent", "empty", "wang"}),
        ("Patient", "general-practitioner", {"dollar"},
         {"comma", "slash", "zhang", "accent", "empty", "wang"}),
        ("Observation", "value-quantity", {"q1", "q2", "q3", "q4"}, set()),
        ("Observation", "subject", {"q1"}, {"q2", "q3", "q4"}),
        ("Observation", "code-value-quantity", {"q1", "q2", "q3", "q4"}, set()),
        ("Observation", "component-code-value-quantity", set(), {"q1", "q2", "q3", "q4"}),
        ("RiskAssessment", "probability", {"r1"}, {"r2"}),
        ("ValueSet", "url", {"v1"}, {"v2"}),
        ("Patient", "_id", {"comma", "slash", "dollar", "zhang", "accent", "empty", "wang"},
         set()),
        # a reference with an identifier only: no Reference.reference to search by
        ("Encounter", "subject", {"enc2"}, {"enc1"}),
    ],
)  # fmt: skip
def test_missing_on_every_type(
    db: SearchDB, resource_type: str, name: str, has: set[str], lacks: set[str]
) -> None:
    assert set(db.search(resource_type, [(f"{name}:missing", "false")])) == has
    assert set(db.search(resource_type, [(f"{name}:missing", "true")])) == lacks


def _issue(resource_type: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    with pytest.raises(FHIRError) as caught:
        parse_search(resource_type, params)
    assert caught.value.status == 400
    (issue,) = caught.value.outcome()["issue"]
    for _, value in params:
        if len(value) > 3:
            assert value not in issue["diagnostics"]  # never echoes patient data
    return dict(issue)


@pytest.mark.parametrize(
    ("resource_type", "params", "code"),
    [
        ("RiskAssessment", [("probability", "abc")], "invalid"),
        ("RiskAssessment", [("probability", "zz0.5")], "invalid"),
        ("RiskAssessment", [("probability", "0x10")], "invalid"),
        ("RiskAssessment", [("probability", "1.5e")], "invalid"),
        ("RiskAssessment", [("probability", "NaN")], "invalid"),
        ("RiskAssessment", [("probability", "Infinity")], "invalid"),
        ("RiskAssessment", [("probability:exact", "0.5")], "not-supported"),
        ("Observation", [("value-quantity", "5.4|http://unitsofmeasure.org")], "invalid"),
        ("Observation", [("value-quantity", "5.4|a|b|c")], "invalid"),
        ("Observation", [("value-quantity", "five||mg")], "invalid"),
        ("Observation", [("value-quantity", "5.4|http://unitsofmeasure.org|")], "invalid"),
        ("Observation", [("value-quantity", "xy5.4")], "invalid"),
        ("Observation", [("value-quantity:foo", "5.4")], "invalid"),
        ("Observation", [("component-code-value-quantity", "http://loinc.org|8480-6")], "invalid"),
        ("Observation", [("component-code-value-quantity", "a$b$c")], "invalid"),
        ("Observation", [("component-code-value-quantity", "a$lt")], "invalid"),
        ("Observation", [("code-value-date", "http://loinc.org|1$2024-13")], "invalid"),
        ("Patient", [("birthdate", "2024-02-30")], "invalid"),
        ("Patient", [("birthdate", "yesterday")], "invalid"),
        ("Patient", [("birthdate", "zz2024")], "invalid"),
        ("Patient", [("_lastUpdated", "2024-01-01T25:00")], "invalid"),
        ("ValueSet", [("url:contains", "http://x")], "not-supported"),
        ("Encounter", [("subject:identifier", "urn:mrn|MRN|42")], "invalid"),
        ("Encounter", [("subject:identifier", "|")], "invalid"),
        ("Encounter", [("subject:Group:identifier", "urn:mrn|MRN-42")], "invalid"),
        # token :in/:not-in/:above/:below: tests/test_terminology_search.py
        ("Observation", [("code:below", "http://loinc.org|")], "invalid"),
        ("Location", [("near", "42.2|-83.7|10|km")], "not-supported"),
        ("MolecularSequence", [("chromosome-variant-coordinate", "1$gt1")], "invalid"),
        ("MolecularSequence", [("chromosome-variant-coordinate", "1$gt1$x")], "invalid"),
        ("Patient", [("_sort", "birthdate,name,family,given,gender,address")], "invalid"),
        ("Patient", [("_count", "1e3")], "invalid"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(
    resource_type: str, params: list[tuple[str, str]], code: str
) -> None:
    issue = _issue(resource_type, params)
    assert issue["code"] == code
    assert issue["expression"] == [params[0][0]]


INJECTIONS = [
    "' OR 1=1 --",
    "x'; DROP TABLE resources; --",
    "\" OR \"\"=\"",
    '{"$where": "this.a == this.b"}',
    '{"$ne": null}',
    "%",
    "_",
    "*",
    "a\x00b",
    "\x00",
    "x" * 100_000,
    "1) UNION SELECT rid, body FROM resources --",
]


@pytest.mark.parametrize("value", INJECTIONS, ids=range(len(INJECTIONS)))
@pytest.mark.parametrize(
    "name", ["family", "family:contains", "family:exact", "identifier", "_id", "code:text",
             "subject", "url", "url:below", "url:above"],
)  # fmt: skip
def test_injection_through_values_is_a_plain_value(db: SearchDB, name: str, value: str) -> None:
    resource_type = "ValueSet" if name.startswith("url") else (
        "Observation" if name in ("code:text", "subject") else "Patient"
    )
    try:
        found = db.search(resource_type, [(name, value)])
    except FHIRError as error:  # e.g. a reference that is no Type/id: a 400, never a 500
        assert error.status == 400
    else:
        assert found == []
    (count,) = db.conn.execute("SELECT COUNT(*) FROM resources").fetchone()
    assert count == len(RESOURCES)


@pytest.mark.parametrize("value", INJECTIONS, ids=range(len(INJECTIONS)))
@pytest.mark.parametrize("name", ["probability", "value-quantity", "birthdate"])
def test_injection_into_typed_values_is_a_400(name: str, value: str) -> None:
    resource_type = {"probability": "RiskAssessment", "value-quantity": "Observation"}.get(
        name, "Patient"
    )
    assert _issue(resource_type, [(name, value)])["expression"] == [name]


@pytest.mark.parametrize(
    "name",
    ["family' OR 1=1 --", "$where", "family;DROP TABLE resources", "a\x00b", "x" * 10_000,
     "family:contains' --", "family:$where", "_sort"],
)  # fmt: skip
def test_injection_through_names(db: SearchDB, name: str) -> None:
    """Unknown names are ignored (or 400 under strict handling); _sort names are looked
    up among the parameters, never put into SQL."""
    if name == "_sort":
        assert _issue("Patient", [(name, "family; DROP TABLE resources")])["expression"] == [name]
        return
    if name.startswith("family:"):  # a known parameter with an unknown modifier
        assert _issue("Patient", [(name, "x")])["expression"] == [name]
        return
    patients = sum(1 for resource in RESOURCES if resource["resourceType"] == "Patient")
    assert len(db.search("Patient", [(name, "x")])) == patients  # ignored: all patients
    with pytest.raises(FHIRError) as caught:
        parse_search("Patient", [(name, "x")], strict=True)
    assert caught.value.status == 400


def test_date_ap_is_within_ten_percent_of_the_gap_to_now(
    db: SearchDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """search.html#prefix: ap on a date is "10% of the gap between now and the date"."""
    now = date_range("2020-01-01")
    assert now is not None
    monkeypatch.setattr(query_module, "now_us", lambda: now[0])
    # 2000-01-01 is 20 years before "now": ap2001 reaches 2 years either side of 2001
    assert db.search("Patient", [("birthdate", "ap2001")]) == ["comma"]
    assert db.search("Patient", [("birthdate", "ap2003")]) == []
    assert db.search("Patient", [("birthdate", "ap2019-12")]) == []


def test_ucum_canonical_forms() -> None:
    """The factors of the conversion come from the UCUM definitions via ucumvert/pint;
    the values keep their decimal precision."""
    assert to_canonical(Decimal("100"), "mg/dL") == ("kilogram.meter-3", Decimal("1.00"))
    assert to_canonical(Decimal("1"), "g/L") == ("kilogram.meter-3", Decimal("1"))
    assert to_canonical(Decimal("37"), "Cel") == ("kelvin", Decimal("310.15"))
    assert to_canonical(Decimal("1.5"), "h") == ("second", Decimal("5400.0"))
    assert canonical_unit("[IU]/L") is None  # arbitrary units convert to nothing
    assert canonical_unit("tablets") is None
    assert canonical_unit("x" * 1000) is None


PLANS = [
    ("Observation", [("code", f"{LOINC}|x")], "search_token"),
    ("Patient", [("identifier", "urn:s|c")], "search_token"),
    ("Observation", [("subject", "Patient/comma")], "search_reference"),
    ("Patient", [("birthdate", "lt2000-01-01")], "search_date"),
    ("Observation", [("value-quantity", f"5.4|{UCUM}|mg")], "search_quantity"),
    ("Observation", [("value-quantity", "5.4||mg")], "search_quantity"),
    ("Observation", [("code-value-quantity", f"{LOINC}|x$gt5")], "search_composite"),
    ("RiskAssessment", [("probability", "gt0.8")], "search_number"),
    ("ValueSet", [("url", "urn:x")], "search_token"),
    ("Patient", [("family", "smi")], "search_string"),
]


@pytest.mark.parametrize(("resource_type", "params", "table"), PLANS)
def test_selective_queries_use_an_index(
    db: SearchDB, resource_type: str, params: list[tuple[str, str]], table: str
) -> None:
    """The driving condition is a range of the index table's primary key, and the
    resources rows are reached by rid: no full scan of either."""
    plan = db.plan(resource_type, params)
    assert f"SEARCH {table} USING PRIMARY KEY (param=?" in plan, plan
    assert f"SCAN {table}" not in plan and "SCAN r" not in plan, plan


def test_date_range_over_several_values_uses_the_hull(tmp_path: Path) -> None:
    """Two date clauses may be met by two different values of one resource (R4
    search.html#combining: each parameter is tested on its own); the hull row that
    drives the search spans both, so the resource is still found, and the plan is a
    range per width class of search_date_span."""
    db = SearchDB(tmp_path / "hull.db")
    db.add({"resourceType": "Goal", "id": "g1", "lifecycleStatus": "active",
            "description": {"text": "x"}, "subject": {"reference": "Patient/p"},
            "target": [{"dueDate": "2020-01-01"}, {"dueDate": "2021-06-01"}]})  # fmt: skip
    db.add({"resourceType": "Goal", "id": "g2", "lifecycleStatus": "active",
            "description": {"text": "x"}, "subject": {"reference": "Patient/p"},
            "target": [{"dueDate": "2020-09-01"}]})  # fmt: skip
    db.add({"resourceType": "Goal", "id": "g3", "lifecycleStatus": "active",
            "description": {"text": "x"}, "subject": {"reference": "Patient/p"},
            "target": [{"dueDate": "2019-06-01"}]})  # fmt: skip
    both = [("target-date", "ge2021-01-01"), ("target-date", "lt2020-06-01")]
    window = [("target-date", "ge2020-08-01"), ("target-date", "lt2020-10-01")]
    before = [("target-date", "ge2019-01-01"), ("target-date", "lt2019-12-01")]
    assert db.search("Goal", both) == ["g1"]
    assert db.search("Goal", window) == ["g1", "g2"]  # g1: 2021-06-01 and 2020-01-01
    assert db.search("Goal", before) == ["g3"]
    assert db.search("Goal", [("target-date", "gt2021-06-01")]) == []
    assert db.search("Goal", [("target-date", "ge2021-06-01")]) == ["g1"]
    plan = db.plan("Goal", window)
    assert "COVERING INDEX search_date_span (param=? AND <expr>=? AND low>? AND low<?)" in plan
    # a file indexed before hull rows existed: the plain driver, same answers
    from fhir_server.storage import sqlite_index

    hull = sqlite_index.param_id("Goal.target-date" + sqlite_index.HULL)
    db.conn.execute("DELETE FROM search_date WHERE param = ?", (hull,))
    # (such a file is told by search_index_state, which sqlite_migrate fills in for it)
    db.conn.execute("UPDATE search_index_state SET value = 'absent' WHERE name = 'date_hulls'")
    assert db.search("Goal", both) == ["g1"]
    assert db.search("Goal", window) == ["g1", "g2"]
    assert db.search("Goal", before) == ["g3"]
    db.conn.close()
