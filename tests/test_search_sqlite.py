"""The SQLite search index on a real database file: exact result sets per the R4 rules."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.definitions import RESOURCE_TYPES, search_parameters
from fhir_server.errors import FHIRError
from fhir_server.storage import sqlite_index
from search.extract import index_key
from search.query import parse_search

RESOURCES_TABLE = """CREATE TABLE IF NOT EXISTS resources (
  rid INTEGER PRIMARY KEY, tenant TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
  version INTEGER NOT NULL, last_updated TEXT NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0, body BLOB,
  UNIQUE (tenant, type, id))"""

LOINC = "http://loinc.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
TAG = {"tag": [{"system": "urn:t", "code": "demo"}]}

PATIENTS: list[dict[str, Any]] = [
    {
        "resourceType": "Patient",
        "id": "pat-a",
        "meta": TAG,
        "identifier": [
            {
                "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                "system": "urn:mrn",
                "value": "A1",
            }
        ],
        "name": [{"family": "Müller", "given": ["Élodie"]}],
        "gender": "female",
        "birthDate": "1980-05-02",
    },
    {
        "resourceType": "Patient",
        "id": "pat-b",
        "identifier": [{"system": "urn:mrn", "value": "B2"}],
        "name": [{"family": "王", "given": ["小明"], "text": "王小明"}],
        "gender": "male",
        "birthDate": "1990",
    },
    {
        "resourceType": "Patient",
        "id": "pat-c",
        "identifier": [{"system": "urn:other", "value": "A1"}],
        "name": [{"family": "Muller", "given": ["Jean-Luc"]}],
        "gender": "male",
        "birthDate": "1980-05",
    },
    {
        "resourceType": "Patient",
        "id": "pat-d",
        "name": [{"family": "Smith", "given": ["Anne Marie"]}],
    },
]

OBSERVATIONS: list[dict[str, Any]] = [
    {
        "resourceType": "Observation",
        "id": "obs-1",
        "meta": TAG,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "718-7", "display": "Hemoglobin"}]},
        "subject": {"reference": "Patient/pat-a"},
        "effectiveDateTime": "2024-03-01T10:00:00+02:00",  # 08:00:00Z, one second
    },
    {
        "resourceType": "Observation",
        "id": "obs-2",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "2345-7", "display": "Glucose"}]},
        "subject": {"reference": "Patient/pat-b"},
        "effectivePeriod": {"start": "2024-02-28", "end": "2024-03-02"},
    },
    {
        "resourceType": "Observation",
        "id": "obs-3",
        "status": "preliminary",
        "code": {"coding": [{"system": "urn:local", "code": "718-7"}], "text": "HGB"},
        "subject": {"reference": "Group/grp-1"},
        "effectiveDateTime": "2024",
    },
    {
        "resourceType": "Observation",
        "id": "obs-4",
        "status": "amended",
        "code": {
            "coding": [
                {"system": LOINC, "code": "718-7", "display": "Hemoglobin [Mass/volume] in Blood"}
            ]
        },
        "subject": {"reference": "http://other.example/fhir/Patient/ext-1"},
        "effectivePeriod": {"start": "2024-03-05T00:00:00Z"},  # ongoing
    },
    {
        "resourceType": "Observation",
        "id": "obs-5",
        "status": "cancelled",
        "code": {"coding": [{"code": "X1"}], "text": "free text"},
    },
]


class Index:
    """A database file with the resources table, the index schema and helpers."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute(RESOURCES_TABLE)
        for statement in sqlite_index.SCHEMA:
            self.conn.execute(statement)

    def add(
        self,
        resource: dict[str, Any],
        last_updated: str = "2026-12-04T16:40:00.000000+00:00",
        tenant: str = "default",
        deleted: bool = False,
    ) -> int:
        cursor = self.conn.execute(
            "INSERT INTO resources (tenant, type, id, version, last_updated, deleted, body) "
            "VALUES (?, ?, ?, 1, ?, ?, ?)",
            (tenant, resource["resourceType"], resource["id"], last_updated, int(deleted),
             json.dumps(resource)),
        )  # fmt: skip
        rid = cursor.lastrowid
        assert rid is not None
        sqlite_index.replace_index(self.conn, rid, resource["resourceType"], resource)
        return rid

    def ids(self, rids: list[int]) -> list[str]:
        id_of = dict(self.conn.execute("SELECT rid, id FROM resources"))
        return [id_of[rid] for rid in rids]

    def search(
        self, resource_type: str | None, params: list[tuple[str, str]], tenant: str = "default"
    ) -> tuple[list[str], int | None]:
        rids, total = sqlite_index.search_rids(
            self.conn, tenant, parse_search(resource_type, params)
        )
        return self.ids(rids), total


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    db = Index(tmp_path / "search.db")
    db.conn.execute("BEGIN")
    for patient in PATIENTS:
        db.add(patient)
    # deleted, and in another tenant: never found
    db.add({**PATIENTS[0], "id": "pat-e"}, deleted=True)
    db.add({**PATIENTS[0], "id": "pat-f"}, tenant="other")
    for month, observation in enumerate(OBSERVATIONS, start=1):
        db.add(observation, last_updated=f"2026-{month:02d}-01T00:00:00.000000+00:00")
    db.conn.execute("COMMIT")
    yield db
    db.conn.close()


def _found(index: Index, resource_type: str | None, params: list[tuple[str, str]]) -> set[str]:
    ids, total = index.search(resource_type, params)
    assert total == len(ids)
    return set(ids)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param([("code", "718-7")], {"obs-1", "obs-3", "obs-4"}, id="code-any-system"),
        pytest.param([("code", f"{LOINC}|718-7")], {"obs-1", "obs-4"}, id="system-and-code"),
        pytest.param([("code", "urn:local|")], {"obs-3"}, id="system-only"),
        pytest.param([("code", "|X1")], {"obs-5"}, id="no-system"),
        pytest.param([("code", "|718-7")], set(), id="no-system-none"),
        pytest.param([("code:not", f"{LOINC}|718-7")], {"obs-2", "obs-3", "obs-5"}, id="not"),
        pytest.param([("code:text", "hemo")], {"obs-1", "obs-4"}, id="text-display"),
        pytest.param([("code:text", "hgb")], {"obs-3"}, id="text-text"),
        pytest.param([("status", "final,amended")], {"obs-1", "obs-2", "obs-4"}, id="or"),
        pytest.param([("status", "final"), ("code", "718-7")], {"obs-1"}, id="and"),
        pytest.param([("subject", "Patient/pat-a")], {"obs-1"}, id="ref-type-id"),
        pytest.param([("subject", "pat-b")], {"obs-2"}, id="ref-id"),
        pytest.param([("subject:Patient", "pat-a")], {"obs-1"}, id="ref-type-modifier"),
        pytest.param([("patient", "Patient/pat-a")], {"obs-1"}, id="patient"),
        pytest.param([("subject", "Group/grp-1")], {"obs-3"}, id="ref-group"),
        # Observation-patient is subject.where(resolve() is Patient): a Group is not one
        pytest.param([("patient", "grp-1")], set(), id="patient-not-group"),
        pytest.param(
            [("subject", "http://other.example/fhir/Patient/ext-1")], {"obs-4"}, id="ref-url"
        ),
        pytest.param([("subject:missing", "true")], {"obs-5"}, id="ref-missing"),
        pytest.param(
            [("subject:missing", "false")], {"obs-1", "obs-2", "obs-3", "obs-4"}, id="ref-present"
        ),
        # date: eq means the value's range lies within the searched range
        pytest.param([("date", "2024-03-01")], {"obs-1"}, id="date-eq-day"),
        pytest.param([("date", "2024")], {"obs-1", "obs-2", "obs-3"}, id="date-eq-year"),
        pytest.param(
            [("date", "2024-03-01T10:00:00+02:00")], {"obs-1"}, id="date-eq-second-offset"
        ),
        pytest.param([("date", "ne2024-03-01")], {"obs-2", "obs-3", "obs-4"}, id="date-ne"),
        pytest.param([("date", "gt2024-03-01")], {"obs-2", "obs-3", "obs-4"}, id="date-gt"),
        pytest.param([("date", "lt2024-03-01")], {"obs-2", "obs-3"}, id="date-lt"),
        pytest.param(
            [("date", "ge2024-03-01")], {"obs-1", "obs-2", "obs-3", "obs-4"}, id="date-ge"
        ),
        pytest.param([("date", "le2024-03-01")], {"obs-1", "obs-2", "obs-3"}, id="date-le"),
        # obs-2 (2024-02-28 to 2024-03-02) straddles the searched day's bounds
        pytest.param(
            [("date", "ge2024-03-02")], {"obs-2", "obs-3", "obs-4"}, id="date-ge-period-ends-in"
        ),
        pytest.param([("date", "gt2024-03-02")], {"obs-3", "obs-4"}, id="date-gt-period-ends-in"),
        pytest.param([("date", "le2024-02-28")], {"obs-2", "obs-3"}, id="date-le-period-starts-in"),
        pytest.param([("date", "lt2024-02-28")], {"obs-3"}, id="date-lt-period-starts-in"),
        pytest.param([("date", "sa2024-03-02")], {"obs-4"}, id="date-sa"),
        pytest.param([("date", "eb2024-03-05")], {"obs-1", "obs-2"}, id="date-eb"),
        # the ongoing obs-4 starts before the end of March: "lt" overlaps it
        pytest.param(
            [("date", "ge2024-03-01"), ("date", "le2024-03-31")],
            {"obs-1", "obs-2", "obs-3", "obs-4"},
            id="date-and-range",
        ),
        pytest.param(
            [("date", "ge2024-03-01"), ("date", "le2024-03-04")],
            {"obs-1", "obs-2", "obs-3"},
            id="date-and-range-before-ongoing",
        ),
        pytest.param([("date:missing", "true")], {"obs-5"}, id="date-missing"),
        pytest.param([("_lastUpdated", "2026-02")], {"obs-2"}, id="lastupdated-eq"),
        pytest.param(
            [("_lastUpdated", "gt2026-02")], {"obs-3", "obs-4", "obs-5"}, id="lastupdated-gt"
        ),
        pytest.param([("_lastUpdated", "lt2026-02-01")], {"obs-1"}, id="lastupdated-lt"),
        pytest.param([("_lastUpdated", "le2026-02-01")], {"obs-1", "obs-2"}, id="lastupdated-le"),
        pytest.param([("_id", "obs-2,obs-4")], {"obs-2", "obs-4"}, id="id"),
        pytest.param([("_id", "obs-2"), ("status", "final")], {"obs-2"}, id="id-and-token"),
        pytest.param([("_tag", "urn:t|demo")], {"obs-1"}, id="tag"),
    ],
)
def test_observation_search(
    index: Index, params: list[tuple[str, str]], expected: set[str]
) -> None:
    assert _found(index, "Observation", params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param([("family", "muller")], {"pat-a", "pat-c"}, id="accent-insensitive"),
        pytest.param([("family", "MÜL")], {"pat-a", "pat-c"}, id="prefix-case"),
        pytest.param([("family:exact", "Müller")], {"pat-a"}, id="exact"),
        pytest.param([("family:exact", "muller")], set(), id="exact-is-case-sensitive"),
        pytest.param([("name:contains", "luc")], {"pat-c"}, id="contains"),
        pytest.param([("name", "王")], {"pat-b"}, id="chinese-family"),
        pytest.param([("name", "小")], {"pat-b"}, id="chinese-given-prefix"),
        pytest.param([("name", "elodie")], {"pat-a"}, id="given-without-accent"),
        pytest.param([("given", "anne  marie")], {"pat-d"}, id="whitespace-collapsed"),
        pytest.param([("name", "mull,smi")], {"pat-a", "pat-c", "pat-d"}, id="string-or"),
        pytest.param([("identifier", "A1")], {"pat-a", "pat-c"}, id="identifier-value"),
        pytest.param([("identifier", "urn:mrn|A1")], {"pat-a"}, id="identifier-system"),
        pytest.param(
            [("identifier:of-type", f"{V2_0203}|MR|A1")], {"pat-a"}, id="identifier-of-type"
        ),
        pytest.param([("identifier:of-type", f"{V2_0203}|SB|A1")], set(), id="of-type-other"),
        # codes carry the system of their required binding (administrative-gender)
        pytest.param(
            [("gender", "http://hl7.org/fhir/administrative-gender|female")],
            {"pat-a"},
            id="code-implied-system",
        ),
        pytest.param([("gender", "|female")], set(), id="code-has-a-system"),
        pytest.param([("gender:missing", "true")], {"pat-d"}, id="missing-true"),
        pytest.param([("gender:missing", "false")], {"pat-a", "pat-b", "pat-c"}, id="missing-no"),
        pytest.param([("gender:not", "male")], {"pat-a", "pat-d"}, id="not-includes-missing"),
        pytest.param([("birthdate", "1980")], {"pat-a", "pat-c"}, id="birth-year"),
        pytest.param([("birthdate", "1980-05")], {"pat-a", "pat-c"}, id="birth-month"),
        pytest.param([("birthdate", "1980-05-02")], {"pat-a"}, id="birth-day"),
        pytest.param([("birthdate", "gt1985")], {"pat-b"}, id="birth-gt"),
        pytest.param([("birthdate", "lt1980-05-02")], {"pat-c"}, id="birth-lt-month-before"),
        pytest.param([("birthdate", "sa1980")], {"pat-b"}, id="birth-sa"),
        pytest.param([("_id", "pat-a,pat-b")], {"pat-a", "pat-b"}, id="ids"),
        pytest.param([("foo", "ignored")], {"pat-a", "pat-b", "pat-c", "pat-d"}, id="unknown"),
    ],
)
def test_patient_search(index: Index, params: list[tuple[str, str]], expected: set[str]) -> None:
    assert _found(index, "Patient", params) == expected


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        # ascending uses each resource's lowest value, descending its highest; no value last
        pytest.param("birthdate", ["pat-c", "pat-a", "pat-b", "pat-d"], id="date-asc"),
        pytest.param("-birthdate", ["pat-b", "pat-c", "pat-a", "pat-d"], id="date-desc"),
        pytest.param("family", ["pat-a", "pat-c", "pat-d", "pat-b"], id="string-asc"),
        pytest.param("-_id", ["pat-d", "pat-c", "pat-b", "pat-a"], id="id-desc"),
        pytest.param("gender", ["pat-a", "pat-b", "pat-c", "pat-d"], id="token-asc"),
    ],
)
def test_sort(index: Index, sort: str, expected: list[str]) -> None:
    assert index.search("Patient", [("_sort", sort)]) == (expected, 4)


def test_sort_by_last_updated_descending(index: Index) -> None:
    ids, _ = index.search("Observation", [("_sort", "-_lastUpdated")])
    assert ids == ["obs-5", "obs-4", "obs-3", "obs-2", "obs-1"]


def test_paging_and_total(index: Index) -> None:
    assert index.search("Observation", [("_count", "2")]) == (["obs-1", "obs-2"], 5)
    assert index.search("Observation", [("_count", "2"), ("_offset", "2")]) == (
        ["obs-3", "obs-4"],
        5,
    )
    assert index.search("Observation", [("_count", "2"), ("_offset", "4")]) == (["obs-5"], 5)
    assert index.search("Observation", [("_count", "0")]) == ([], 5)
    assert index.search("Observation", [("_total", "none"), ("_count", "1")]) == (["obs-1"], None)


def test_tenants_and_deleted_resources_are_apart(index: Index) -> None:
    assert index.search("Patient", [("family", "müller")], tenant="other") == (["pat-f"], 1)
    assert "pat-e" not in _found(index, "Patient", [])


def test_search_across_types_with_a_common_parameter(index: Index) -> None:
    ids, total = index.search(None, [("_tag", "urn:t|demo")])
    assert (sorted(ids), total) == (["obs-1", "pat-a"], 2)


def test_replace_and_clear_index(index: Index) -> None:
    (rid,) = index.conn.execute("SELECT rid FROM resources WHERE id = 'pat-d'").fetchone()
    renamed = {**PATIENTS[3], "name": [{"family": "Jones"}]}
    sqlite_index.replace_index(index.conn, rid, "Patient", renamed)
    assert _found(index, "Patient", [("family", "smith")]) == set()
    assert _found(index, "Patient", [("family", "jones")]) == {"pat-d"}
    sqlite_index.clear_index(index.conn, rid)
    for table in ("search_token", "search_string", "search_reference", "search_date"):
        assert index.conn.execute(
            f"SELECT count(*) FROM {table} WHERE rid = ?", (rid,)
        ).fetchone() == (0,)


def test_user_text_is_bound_never_interpolated(index: Index) -> None:
    hostile = "x') OR 1=1 --"
    assert _found(index, "Patient", [("family", hostile)]) == set()
    assert _found(index, "Patient", [("identifier", hostile)]) == set()
    assert _found(index, "Patient", [("_id", hostile)]) == set()


def test_a_single_value_search_is_an_index_lookup(index: Index) -> None:
    query = parse_search("Observation", [("subject", "Patient/pat-a"), ("code", "718-7")])
    where, args = sqlite_index._where("default", query)
    plan = index.conn.execute(
        f"EXPLAIN QUERY PLAN SELECT r.rid FROM resources r WHERE {where}", args
    ).fetchall()
    details = " | ".join(row[3] for row in plan)
    assert "SEARCH r USING INTEGER PRIMARY KEY" in details
    assert "SEARCH search_reference USING PRIMARY KEY (param=? AND target_id=?" in details
    assert "USING COVERING INDEX search_token_rid (rid=? AND param=?" in details
    assert "SCAN" not in details


def test_bad_input_is_a_400_before_any_sql() -> None:
    with pytest.raises(FHIRError) as caught:
        parse_search("Patient", [("birthdate", "yesterday")])
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == ("birthdate",)


def test_param_ids_of_all_r4_keys_are_distinct() -> None:
    keys = {"_tag", "_security", "_tag:text", "_security:text"}
    for resource_type in RESOURCE_TYPES:
        for code in search_parameters(resource_type):
            keys.add(index_key(resource_type, code))
            keys.add(index_key(resource_type, code) + ":text")
            keys.add(index_key(resource_type, code) + ":of-type")
    ids = {sqlite_index.param_id(key) for key in keys}
    assert len(ids) == len(keys)


@settings(max_examples=60, deadline=None)
@given(
    family=st.text(
        alphabet=st.characters(categories=("Lu", "Ll", "Lo", "Zs")), min_size=1, max_size=12
    ).filter(lambda s: s.strip()),
    cut=st.integers(min_value=1, max_value=12),
)
def test_any_prefix_of_a_name_finds_it(
    tmp_path_factory: pytest.TempPathFactory, family: str, cut: int
) -> None:
    db = Index(tmp_path_factory.mktemp("prop") / "p.db")
    db.add({"resourceType": "Patient", "id": "p", "name": [{"family": family}]})
    prefix = family.strip()[:cut]
    if prefix.strip():
        assert db.search("Patient", [("family", prefix)]) == (["p"], 1)
    assert db.search("Patient", [("family:exact", family)]) == (["p"], 1)
    db.conn.close()


_NAMES = st.sampled_from(
    [
        "code", "code:not", "code:text", "code:below", "subject", "subject:Patient",
        "subject:missing", "patient", "date", "date:missing", "status", "_id", "_lastUpdated",
        "_count", "_offset", "_sort", "_total", "value-quantity", "identifier:of-type",
        "subject.name", "_has:Observation:subject:code", "combo-code", "foo", "_tag",
    ]
)  # fmt: skip
_VALUES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["ge2024", "eb2024-03-01T10:00:00Z", "Patient/pat-a", "a|b", r"x\,y", "|", ",", "-date",
         "true", "5", "-1", "http://loinc.org|718-7", "2024-13", "sa", "gt"]
    ),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(params=st.lists(st.tuples(_NAMES, _VALUES), max_size=4))
def test_any_input_is_a_result_or_a_400(
    tmp_path_factory: pytest.TempPathFactory, params: list[tuple[str, str]]
) -> None:
    try:
        query = parse_search("Observation", params)
    except FHIRError as error:
        assert error.status == 400
        assert error.issues and error.issues[0].expression
        return
    path = tmp_path_factory.getbasetemp() / "fuzz.db"
    fresh = not path.exists()
    db = Index(path)
    if fresh:  # once: the Observations above, so the page query runs too
        for observation in OBSERVATIONS:
            db.add(observation)
    try:
        ids, total = db.search("Observation", query.to_params())
        assert total is None or len(ids) <= total
    finally:
        db.conn.close()
