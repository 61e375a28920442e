"""Parsing of search parameters into a SearchQuery, and the 400s for bad input."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.errors import FHIRError
from search.query import (
    DateTerm,
    ReferenceTerm,
    StringTerm,
    TokenTerm,
    parse_search,
    split_escaped,
    unescape,
)
from search.values import date_range


def _error(
    resource_type: str | None, params: list[tuple[str, str]], strict: bool = False
) -> dict[str, Any]:
    with pytest.raises(FHIRError) as caught:
        parse_search(resource_type, params, strict=strict)
    assert caught.value.status == 400
    (issue,) = caught.value.issues
    return issue.to_json()


def test_token_forms() -> None:
    query = parse_search("Observation", [("code", "http://loinc.org|718-7,|x,urn:s|,718-7")])
    (clause,) = query.clauses
    assert clause.key == "Observation.code"
    assert clause.terms == (
        TokenTerm("http://loinc.org|718-7", "http://loinc.org", "718-7"),
        TokenTerm("|x", "", "x"),
        TokenTerm("urn:s|", "urn:s", None),
        TokenTerm("718-7", None, "718-7"),
    )


def test_repeated_parameter_is_and_comma_is_or() -> None:
    query = parse_search("Patient", [("given", "ann,eve"), ("given", "marie")])
    assert [len(c.terms) for c in query.clauses] == [2, 1]


def test_escapes() -> None:
    assert split_escaped(r"a\,b,c\|d|e", ",") == [r"a\,b", r"c\|d|e"]
    assert unescape(r"a\,b\$c\\d\|e") == "a,b$c\\d|e"
    query = parse_search("Patient", [("family", r"O\,Brien")])
    (term,) = query.clauses[0].terms
    assert isinstance(term, StringTerm)
    assert (term.text, term.normalized) == ("O,Brien", "o,brien")
    query = parse_search("Observation", [("code", r"urn:x|a\|b")])
    assert query.clauses[0].terms[0] == TokenTerm(r"urn:x|a\|b", "urn:x", "a|b")


def test_reference_forms() -> None:
    query = parse_search(
        "Observation",
        [
            ("subject", "Patient/p1,p2,http://other.org/fhir/Patient/p3"),
            ("subject:Patient", "p4"),
            ("performer", "Practitioner/x/_history/2"),
        ],
    )
    subject, typed, performer = query.clauses
    assert subject.terms == (
        ReferenceTerm("Patient/p1", "Patient", "p1"),
        ReferenceTerm("p2", None, "p2"),
        ReferenceTerm("http://other.org/fhir/Patient/p3", None, "http://other.org/fhir/Patient/p3"),
    )
    assert typed.modifier == "Patient"
    assert typed.terms == (ReferenceTerm("p4", "Patient", "p4"),)
    assert performer.terms == (ReferenceTerm("Practitioner/x/_history/2", "Practitioner", "x"),)


def test_reference_to_this_server_becomes_relative() -> None:
    base = "http://localhost:8080/fhir"
    query = parse_search("Observation", [("subject", f"{base}/Patient/p1")], base_url=base)
    assert query.clauses[0].terms == (ReferenceTerm(f"{base}/Patient/p1", "Patient", "p1"),)
    other = parse_search("Observation", [("subject", "http://elsewhere/Patient/p1")], base_url=base)
    assert other.clauses[0].terms[0] == ReferenceTerm(
        "http://elsewhere/Patient/p1", None, "http://elsewhere/Patient/p1"
    )


def test_date_prefixes() -> None:
    query = parse_search("Patient", [("birthdate", "ge1980,lt1990-06"), ("birthdate", "2000")])
    first, second = query.clauses
    low_1980, _ = date_range("1980")  # type: ignore[misc]
    _, high_1990_06 = date_range("1990-06")  # type: ignore[misc]
    assert isinstance(first.terms[0], DateTerm) and first.terms[0].prefix == "ge"
    assert first.terms[0].low == low_1980
    assert isinstance(first.terms[1], DateTerm) and first.terms[1].high == high_1990_06
    assert isinstance(second.terms[0], DateTerm) and second.terms[0].prefix == "eq"


def test_date_with_plus_decoded_as_space() -> None:
    query = parse_search("Observation", [("date", "gt2024-03-01T10:00:00 02:00")])
    term = query.clauses[0].terms[0]
    assert isinstance(term, DateTerm)
    assert (term.low, term.high) == date_range("2024-03-01T08:00:00Z")


def test_result_parameters() -> None:
    query = parse_search(
        "Patient", [("_count", "5"), ("_offset", "10"), ("_sort", "-birthdate"), ("_total", "none")]
    )
    assert (query.count, query.offset, query.total) == (5, 10, "none")
    assert query.sort is not None and query.sort.descending and query.sort.code == "birthdate"
    assert parse_search("Patient", []).count == 20
    assert parse_search("Patient", [("_count", "0")]).count == 0
    assert parse_search("Patient", [("_count", "5000")]).count == 1000


def test_unknown_parameters_are_ignored_and_listed() -> None:
    query = parse_search("Patient", [("foo", "bar"), ("_list", "x"), ("name", "x")])
    assert query.ignored == (("foo", "bar"), ("_list", "x"))
    assert len(query.clauses) == 1


def test_format_and_empty_values_are_not_clauses() -> None:
    query = parse_search("Patient", [("_format", "json"), ("name", "")])
    assert query.clauses == () and query.ignored == ()


def test_to_params_is_canonical() -> None:
    query = parse_search(
        "Observation",
        [
            ("code", r"http://loinc.org|718-7,a\,b"),
            ("subject:Patient", "p1"),
            ("date:missing", "true"),
            ("foo", "ignored"),
            ("_sort", "-date"),
            ("_count", "10"),
            ("_offset", "20"),
        ],
    )
    assert query.to_params() == [
        ("code", r"http://loinc.org|718-7,a\,b"),
        ("subject:Patient", "p1"),
        ("date:missing", "true"),
        ("_sort", "-date"),
        ("_count", "10"),
        ("_offset", "20"),
    ]
    assert query.at_offset(30).to_params()[-1] == ("_offset", "30")


def test_system_level_search_knows_only_common_parameters() -> None:
    query = parse_search(None, [("_tag", "urn:t|demo"), ("name", "x")])
    assert [c.key for c in query.clauses] == ["_tag"]
    assert query.ignored == (("name", "x"),)


@pytest.mark.parametrize(
    ("params", "expression", "fragment"),
    [
        pytest.param([("foo", "1")], "foo", "unknown", id="strict-unknown"),
        pytest.param(
            [("_list", "x")], "_list", "not applied", id="strict-list"
        ),
    ],
)
def test_strict_handling_rejects_unknown(
    params: list[tuple[str, str]], expression: str, fragment: str
) -> None:
    issue = _error("Patient", params, strict=True)
    assert issue["expression"] == [expression]
    assert fragment in issue["diagnostics"]


@pytest.mark.parametrize(
    ("resource_type", "params", "expression", "fragment"),
    [
        pytest.param("Observation", [("code.text", "x")], "code.text", "cannot chain", id="chain"),
        pytest.param(
            "Observation",
            [("subject:Medication.code", "x")],
            "subject:Medication.code",
            "not a target",
            id="typed-chain",
        ),
        pytest.param(
            "Patient",
            [("_has:Observation:code:status", "x")],
            "_has:Observation:code:status",
            "reference",
            id="has",
        ),
        pytest.param(
            "Observation",
            [("value-quantity", "5|http://unitsofmeasure.org")],
            "value-quantity",
            "value|system|code",
            id="quantity",
        ),
        pytest.param("Observation", [("value-string:exact", "x" * 3006)], "value-string:exact",
                     "at most 511 characters", id="string-beyond-index"),
        pytest.param("Observation", [("value-string", "x" * 1000)], "value-string",
                     "indexed by their first 512", id="string-prefix-beyond-index"),
        pytest.param("Observation", [("code:text", "x" * 512)], "code:text",
                     "at most 511 characters", id="token-text-beyond-index"),
        pytest.param("Observation", [("value-quantity", "5|http://unitsofmeasure.org|notaunit")],
                     "value-quantity", "'notaunit' is not a valid UCUM unit", id="ucum-unit"),
        pytest.param("Observation", [("value-quantity", "1|http://unitsofmeasure.org|mg/(dL")],
                     "value-quantity", "'mg/(dL' is not a valid UCUM unit", id="ucum-syntax"),
        pytest.param("Observation", [("value-quantity", "1|http://unitsofmeasure.org|[foo]")],
                     "value-quantity", "'[foo]' is not a valid UCUM unit", id="ucum-atom"),
        pytest.param(
            "RiskAssessment", [("probability", "0.5.1")], "probability", "number", id="number"
        ),
        pytest.param("Patient", [("_profile:exact", "http://x")], "_profile:exact", ":exact",
                     id="uri"),
        pytest.param("Location", [("near", "1|2")], "near", "special", id="special"),
        pytest.param("Observation", [("code:below", "x")], "code:below", ":below", id="below"),
        pytest.param("Patient", [("name:foo", "x")], "name:foo", "Unknown modifier", id="modifier"),
        pytest.param(
            "Patient", [("gender:exact", "x")], "gender:exact", ":exact", id="token-exact"
        ),
        pytest.param("Patient", [("birthdate", "xx2020")], "birthdate", "prefix", id="prefix"),
        pytest.param("Patient", [("birthdate", "2020-13-01")], "birthdate", "FHIR date", id="date"),
        pytest.param("Patient", [("birthdate", "1980,")], "birthdate", "empty", id="empty-or"),
        pytest.param("Observation", [("code", "a|b|c")], "code", "system", id="token-pipes"),
        pytest.param("Observation", [("code", "|")], "code", "system", id="token-bare-pipe"),
        pytest.param(
            "Patient",
            [("identifier:of-type", "urn:x|MR")],
            "identifier:of-type",
            "[type code]",
            id="of-type-parts",
        ),
        pytest.param("Observation", [("subject", "Foo/1")], "subject", "Type/id", id="bad-type"),
        pytest.param(
            "Observation", [("patient", "Group/1")], "patient", "not a target", id="not-target"
        ),
        pytest.param(
            "Observation",
            [("subject:Medication", "1")],
            "subject:Medication",
            "not a target",
            id="modifier-not-target",
        ),
        pytest.param(
            "Patient",
            [("gender:missing", "maybe")],
            "gender:missing",
            "true or false",
            id="missing",
        ),
        pytest.param("Patient", [("_count", "-1")], "_count", "whole number", id="count"),
        pytest.param("Patient", [("_count", "ten")], "_count", "whole number", id="count-text"),
        pytest.param("Patient", [("_offset", "-5")], "_offset", "whole number", id="offset"),
        pytest.param(
            "Patient",
            [("_count", "1"), ("_count", "2")],
            "_count",
            "more than once",
            id="count-twice",
        ),
        pytest.param(
            "Patient", [("_sort", "name,-name")], "_sort", "twice", id="sort-twice"
        ),
        pytest.param("Patient", [("_sort", "nope")], "_sort", "unknown", id="sort-unknown"),
        pytest.param(
            "Observation", [("_sort", "code-value-quantity")], "_sort", "composite", id="sort-comp"
        ),
        pytest.param("Patient", [("_total", "some")], "_total", "accurate", id="total"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(
    resource_type: str, params: list[tuple[str, str]], expression: str, fragment: str
) -> None:
    issue = _error(resource_type, params)
    assert issue["expression"] == [expression]
    assert fragment in issue["diagnostics"]


def test_errors_do_not_echo_the_searched_value() -> None:
    issue = _error("Patient", [("birthdate", "Dupont-1980")])
    assert "Dupont" not in issue["diagnostics"]


def test_unknown_resource_type_is_a_400() -> None:
    issue = _error("Foo", [])
    assert issue["code"] == "not-supported"
