"""The compact SQLite layout (schema 2): interned system URIs, the contentless full-text
index with its exact text kept aside, and the in-place migration of a schema-1 file.
Real SQLite files, searched through the ASGI app."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.app import create_app
from fhir_server.storage import sqlite_fulltext, sqlite_index
from fhir_server.storage.sqlite_index import UNIONS, param_id
from search.extract import extract
from fhir_server.storage.sqlite import SCHEMA_VERSION, SQLiteStore

pytestmark = pytest.mark.anyio

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"


def _narrative(text: str) -> dict[str, str]:
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{text}</div>'}


def _glucose(oid: str, value: str, code: str = "2339-0") -> dict[str, Any]:
    """A blood glucose Observation (LOINC 2339-0, mg/dL in UCUM)."""
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "text": _narrative(f"Glucose {value} mg/dL, fasting"),
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-01T08:00:00Z" if value == "95" else "2024-03-02",
        "valueQuantity": {"value": float(value), "unit": "mg/dL", "system": UCUM,
                          "code": "mg/dL"},
    }  # fmt: skip


CONDITION = {
    "resourceType": "Condition", "id": "c1",
    "text": _narrative("Essential hypertension"),
    "code": {"coding": [{"system": SNOMED, "code": "59621000",
                         "display": "Essential hypertension"}]},
    "subject": {"reference": "Patient/p1"},
}  # fmt: skip


@asynccontextmanager
async def _client(path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = await SQLiteStore.open(path)
    try:
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://t/fhir/") as client:
            yield client
    finally:
        await store.close()


async def _ids(client: httpx.AsyncClient, rtype: str, params: Any) -> set[str]:
    response = await client.get(rtype, params=params)
    assert response.status_code == 200, response.text
    return {entry["resource"]["id"] for entry in response.json().get("entry", [])}


async def _put(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await client.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text


async def _fill(client: httpx.AsyncClient) -> None:
    await _put(client, {"resourceType": "Patient", "id": "p1"})
    await _put(client, _glucose("o1", "95"))
    await _put(client, _glucose("o2", "180"))
    await _put(client, CONDITION)


async def _searches_agree(client: httpx.AsyncClient) -> None:
    """Token, quantity, composite and full-text searches on the _fill data."""
    assert await _ids(client, "Observation", {"code": f"{LOINC}|2339-0"}) == {"o1", "o2"}
    assert await _ids(client, "Observation", {"code": "2339-0"}) == {"o1", "o2"}
    assert await _ids(client, "Observation", {"code": f"{SNOMED}|2339-0"}) == set()
    assert await _ids(client, "Observation", {"code": "http://unknown.example|2339-0"}) == set()
    assert await _ids(client, "Observation", {"code:not": f"{LOINC}|2339-0"}) == set()
    assert await _ids(
        client, "Observation", {"value-quantity": f"gt100|{UCUM}|mg/dL"}
    ) == {"o2"}
    assert await _ids(
        client, "Observation", {"code-value-quantity": f"{LOINC}|2339-0$lt100|{UCUM}|mg/dL"}
    ) == {"o1"}
    assert await _ids(client, "Condition", {"code": f"{SNOMED}|59621000"}) == {"c1"}
    assert await _ids(client, "Condition", {"_text": "hypertension"}) == {"c1"}
    assert await _ids(client, "Observation", {"_content": "fasting"}) == {"o1", "o2"}
    day = [("date", "ge2024-03-02"), ("date", "lt2024-03-03")]
    assert await _ids(client, "Observation", day) == {"o2"}


def _fts_integrity(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("INSERT INTO search_fulltext (search_fulltext) VALUES ('integrity-check')")
    finally:
        conn.close()


async def test_system_uris_are_stored_once_and_searched_by_id(tmp_path: Path) -> None:
    path = tmp_path / "fhir.db"
    async with _client(path) as client:
        await _fill(client)
        await _searches_agree(client)
    conn = sqlite3.connect(path)
    uris = [row[0] for row in conn.execute("SELECT uri FROM search_systems")]
    assert len(uris) == len(set(uris))
    assert {LOINC, UCUM, SNOMED} <= set(uris)
    # rows hold the integer id, never the URI
    assert conn.execute("SELECT typeof(system) FROM search_token").fetchall()
    assert {row[0] for row in conn.execute("SELECT typeof(system) FROM search_token")} == {
        "integer"
    }
    (loinc,) = conn.execute("SELECT id FROM search_systems WHERE uri = ?", (LOINC,)).fetchone()
    assert conn.execute(
        "SELECT count(*) FROM search_composite WHERE system = ?", (loinc,)
    ).fetchone()[0] >= 2
    conn.close()


async def test_a_rolled_back_write_takes_its_new_system_away(tmp_path: Path) -> None:
    from fhir_server.storage.base import Context

    store = await SQLiteStore.open(tmp_path / "fhir.db")
    try:
        with pytest.raises(RuntimeError, match="abort"):
            async with store.transaction(Context()) as txn:
                await txn.create(
                    {"resourceType": "Observation", "status": "final",
                     "code": {"coding": [{"system": "urn:only-here", "code": "x"}]}}
                )  # fmt: skip
                raise RuntimeError("abort")
        rows = store._reader.execute(
            "SELECT count(*) FROM search_systems WHERE uri = 'urn:only-here'"
        ).fetchone()
        assert rows == (0,)
    finally:
        await store.close()


async def test_full_text_forgets_exactly_the_old_text_on_update_and_delete(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fhir.db"
    async with _client(path) as client:
        await _fill(client)
        changed = {**CONDITION, "text": _narrative("Chronic asthma"), "code": {"text": "Asthma"}}
        await _put(client, changed)
        assert await _ids(client, "Condition", {"_text": "hypertension"}) == set()
        assert await _ids(client, "Condition", {"_content": "hypertension"}) == set()
        assert await _ids(client, "Condition", {"_text": "asthma"}) == {"c1"}
        assert (await client.delete("Observation/o2")).status_code in (200, 204)
        assert await _ids(client, "Observation", {"_content": "fasting"}) == {"o1"}
        await _put(client, _glucose("o2", "180"))  # back, under the same rid
        assert await _ids(client, "Observation", {"_content": "fasting"}) == {"o1", "o2"}
    conn = sqlite3.connect(path)
    # the FTS5 table keeps no text; the docs table one row per indexed resource
    assert conn.execute("SELECT count(*) FROM search_fulltext_docs").fetchone() == (4,)
    assert conn.execute("SELECT narrative FROM search_fulltext").fetchall() == [(None,)] * 4
    conn.close()
    _fts_integrity(path)


# -- a schema-1 file --------------------------------------------------------------------

_V1_TABLES = {
    "search_token": "param INTEGER NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL, "
    "rid INTEGER NOT NULL, PRIMARY KEY (param, code, system, rid)",
    "search_quantity": "param INTEGER NOT NULL, code TEXT NOT NULL, value REAL NOT NULL, "
    "system TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (param, code, value, system, rid)",
    "search_quantity_range": "param INTEGER NOT NULL, code TEXT NOT NULL, low REAL NOT NULL, "
    "high REAL NOT NULL, system TEXT NOT NULL, rid INTEGER NOT NULL, "
    "PRIMARY KEY (param, code, low, high, system, rid)",
    "search_composite": "param INTEGER NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL, "
    "v_code TEXT NOT NULL, v_low NOT NULL, v_high NOT NULL, v_system TEXT NOT NULL, "
    "rid INTEGER NOT NULL, "
    "PRIMARY KEY (param, code, system, v_code, v_low, v_high, v_system, rid)",
}


def _to_schema_1(path: Path, hulls: bool = True) -> None:
    """Rewrite a current file the way schema 1 laid it out: system URIs in the rows, an
    FTS5 table with its own content, versions_by_instant, user_version 1, and a hull row
    for every dated Observation (without `hulls`: none, as before hull rows existed)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("DROP TABLE search_index_state")
    if hulls:
        conn.execute(
            "INSERT OR IGNORE INTO search_date SELECT ?, low, high, rid FROM search_date "
            "WHERE param = ?",
            (param_id("Observation.date:hull"), param_id("Observation.date")),
        )
    for table, columns in _V1_TABLES.items():
        names = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        selected = ", ".join(
            f"(SELECT uri FROM search_systems WHERE id = t.{n})" if n.endswith("system")
            else f"t.{n}" for n in names
        )  # fmt: skip
        conn.execute(f"CREATE TABLE {table}_v1 ({columns}) WITHOUT ROWID")
        conn.execute(
            f"INSERT INTO {table}_v1 ({', '.join(names)}) SELECT {selected} FROM {table} t"
        )
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE {table}_v1 RENAME TO {table}")
        conn.execute(f"CREATE INDEX {table}_rid ON {table} (rid, param)")
    conn.execute("DROP TABLE search_systems")
    # schema 1 stored the combo-* rows too: a copy of code's under combo-code's param
    conn.execute(
        "INSERT INTO search_token SELECT ?, code, system, rid FROM search_token WHERE param = ?",
        (param_id("Observation.combo-code"), param_id("Observation.code")),
    )
    texts = conn.execute("SELECT rid, docs FROM search_fulltext_docs").fetchall()
    conn.execute("DROP TABLE search_fulltext")
    conn.execute(
        "CREATE VIRTUAL TABLE search_fulltext USING fts5(narrative, content, "
        "tokenize = 'unicode61 remove_diacritics 2')"
    )
    for rid, docs in texts:
        narrative, content = sqlite_fulltext._unpack(conn, docs)
        conn.execute(
            "INSERT INTO search_fulltext (rowid, narrative, content) VALUES (?, ?, ?)",
            (rid, narrative, content),
        )
    conn.execute("DROP TABLE search_fulltext_docs")
    conn.execute("DROP TABLE search_fulltext_dictionary")
    conn.execute("CREATE INDEX versions_by_instant ON versions (last_updated)")
    conn.execute("DROP INDEX versions_by_tenant")
    conn.execute("DROP INDEX versions_by_type")
    conn.execute("CREATE INDEX versions_by_time ON versions (tenant, last_updated)")
    conn.execute("CREATE INDEX versions_by_type_time ON versions (tenant, type, last_updated)")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("COMMIT")
    conn.close()


async def test_a_schema_1_file_is_migrated_in_place_on_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    async with _client(path) as client:
        await _fill(client)
    _to_schema_1(path)
    conn = sqlite3.connect(path)
    assert conn.execute(
        "SELECT DISTINCT typeof(system) FROM search_token"
    ).fetchall() == [("text",)]
    assert conn.execute("SELECT narrative FROM search_fulltext WHERE rowid = 4").fetchone()[0]
    conn.close()

    with caplog.at_level(logging.INFO, logger="fhir_server.storage.sqlite_migrate"):
        async with _client(path) as client:
            await _searches_agree(client)
            # the migrated full text forgets an old text exactly, like a new file
            changed = {**CONDITION, "text": _narrative("Chronic asthma"), "code": {"text": "x"}}
            await _put(client, changed)
            assert await _ids(client, "Condition", {"_text": "hypertension"}) == set()
            assert await _ids(client, "Condition", {"_text": "asthma"}) == {"c1"}
            await _put(client, _glucose("o3", "120"))  # new rows beside migrated ones
            assert await _ids(client, "Observation", {"code": f"{LOINC}|2339-0"}) == {
                "o1", "o2", "o3"
            }
    messages = [record.getMessage() for record in caplog.records]
    assert any("rows of search_token now hold system ids" in m for m in messages)
    assert any("full-text index rebuilt contentless, 4 of 4" in m for m in messages)
    assert any("2 combo-* rows removed from search_token" in m for m in messages)
    # o1 and o2 have one date each: schema 1's hull rows for them go
    assert any("date hull rows complete, 2 of single values removed" in m for m in messages)

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema")}
    assert not names & {"versions_by_instant", "versions_by_time", "versions_by_type_time"}
    assert {"versions_by_tenant", "versions_by_type"} <= names
    assert {"search_token_rid", "search_composite_rid", "search_fulltext_docs"} <= names
    assert conn.execute(
        "SELECT DISTINCT typeof(system) FROM search_token"
    ).fetchall() == [("integer",)]
    assert conn.execute(
        "SELECT count(*) FROM search_token WHERE param = ?", (param_id("Observation.combo-code"),)
    ).fetchone() == (0,)
    conn.close()
    _fts_integrity(path)

    # opening it again finds nothing left to migrate
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fhir_server.storage.sqlite_migrate"):
        async with _client(path) as client:
            assert await _ids(client, "Observation", {"_content": "fasting"}) == {
                "o1", "o2", "o3"
            }
    assert not caplog.records


async def test_texts_past_the_sample_are_deflated_and_still_forgotten_exactly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fhir.db"
    count = sqlite_fulltext._SAMPLE_DOCS + 20
    async with _client(path) as client:
        for n in range(count):
            await _put(client, {**CONDITION, "id": f"c{n}",
                                "text": _narrative(f"Essential hypertension, visit {n}")})
        last = f"c{count - 1}"
        await _put(client, {**CONDITION, "id": last, "text": _narrative("Seasonal asthma")})
        assert await _ids(client, "Condition", {"_text": "asthma"}) == {last}
        found = await client.get(
            "Condition", params={"_text": "hypertension", "_total": "accurate"}
        )
        assert found.json()["total"] == count - 1
    conn = sqlite3.connect(path)
    kinds = dict(conn.execute(
        "SELECT substr(docs, 1, 1), count(*) FROM search_fulltext_docs GROUP BY 1"
    ).fetchall())
    assert kinds == {b"\x00": sqlite_fulltext._SAMPLE_DOCS, b"\x01": 20}
    assert conn.execute("SELECT count(*) FROM search_fulltext_dictionary").fetchone() == (1,)
    conn.close()
    _fts_integrity(path)


# -- Observation combo-* parameters: not stored, read as the union of two others --------

BLOOD_PRESSURE: dict[str, Any] = {
    "resourceType": "Observation", "id": "bp", "status": "final",
    "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
    "subject": {"reference": "Patient/p1"},
    "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "38341003"}]},
    "component": [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
         "valueQuantity": {"value": 142, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
         "dataAbsentReason": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                          "data-absent-reason", "code": "not-performed"}]}},
    ],
}  # fmt: skip


def test_each_combo_parameter_extracts_the_union_of_its_two_parts() -> None:
    """The premise of UNIONS, on the R4 definitions and the extractor: every row of a
    combo-* key is a row of one of its two parts and the other way round."""
    rows = extract(BLOOD_PRESSURE)
    kinds = (rows.tokens, rows.strings, rows.quantities, rows.composites)
    checked = 0
    for combo, parts in UNIONS.items():
        for found in kinds:
            combined = {row[1:] for row in found if row[0].partition(":")[0] == combo
                        and row[0].startswith(combo)}
            suffixes = {row[0][len(combo):] for row in found if row[0].startswith(combo + ":")
                        or row[0] == combo}
            for suffix in suffixes:
                mine = {row[1:] for row in found if row[0] == combo + suffix}
                theirs = {row[1:] for row in found if row[0] in {p + suffix for p in parts}}
                assert mine == theirs, (combo + suffix)
                checked += bool(mine)
            assert combined or not suffixes
    assert checked >= 6  # code, :text, value-concept, data-absent-reason, quantity, composite


async def test_combo_searches_read_both_parts_and_store_neither_copy(tmp_path: Path) -> None:
    path = tmp_path / "fhir.db"
    async with _client(path) as client:
        await _fill(client)
        await _put(client, BLOOD_PRESSURE)
        obs = "Observation"
        assert await _ids(client, obs, {"combo-code": f"{LOINC}|8480-6"}) == {"bp"}
        assert await _ids(client, obs, {"combo-code": f"{LOINC}|85354-9"}) == {"bp"}
        assert await _ids(client, obs, {"combo-code": "2339-0"}) == {"o1", "o2"}
        assert await _ids(client, obs, {"combo-code:text": "x"}) == set()
        assert await _ids(client, obs, {"combo-code:not": f"{LOINC}|8480-6"}) == {"o1", "o2"}
        assert await _ids(client, obs, {"combo-value-quantity": f"gt140|{UCUM}|mm[Hg]"}) == {
            "bp"
        }
        assert await _ids(client, obs, {"combo-value-quantity": "gt150"}) == {"o2"}
        assert await _ids(
            client, obs, {"combo-code-value-quantity": f"{LOINC}|8480-6$gt140"}
        ) == {"bp"}
        assert await _ids(
            client, obs, {"combo-code-value-quantity": f"{LOINC}|2339-0$lt100"}
        ) == {"o1"}
        assert await _ids(client, obs, {"combo-data-absent-reason": "not-performed"}) == {"bp"}
        assert await _ids(client, obs, {"combo-value-concept": f"{SNOMED}|38341003"}) == {"bp"}
        assert await _ids(client, obs, {"combo-value-quantity:missing": "true"}) == set()
        assert await _ids(client, obs, {"combo-data-absent-reason:missing": "false"}) == {"bp"}
        response = await client.get(obs, params={"_sort": "-combo-value-quantity"})
        # by canonical UCUM value: 142 mm[Hg] = 18,932 Pa, above 180 mg/dL = 1.8 kg/m3
        assert [e["resource"]["id"] for e in response.json()["entry"]] == ["bp", "o2", "o1"]
    conn = sqlite3.connect(path)
    combo_ids = [param_id(key + suffix) for key in UNIONS for suffix in ("", ":canonical", ":text")]
    for table in ("search_token", "search_string", "search_quantity", "search_composite"):
        found = conn.execute(
            f"SELECT count(*) FROM {table} WHERE param IN ({','.join('?' * len(combo_ids))})",
            combo_ids,
        ).fetchone()
        assert found == (0,), table
    conn.close()
    assert sqlite_index.param_ids("Observation.combo-code:text") == (
        param_id("Observation.code:text"), param_id("Observation.component-code:text"))


# -- date hull rows ----------------------------------------------------------------------


def _hull_rows(path: Path, key: str) -> list[tuple[int, int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT low, high FROM search_date WHERE param = ?", (param_id(key + ":hull"),)
        ).fetchall()
    finally:
        conn.close()


async def test_only_a_parameter_with_several_dates_gets_a_hull_row(tmp_path: Path) -> None:
    path = tmp_path / "fhir.db"
    goal = {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "x"},
            "subject": {"reference": "Patient/p1"}}  # fmt: skip
    async with _client(path) as client:
        await _put(client, {**goal, "id": "g1", "target": [{"dueDate": "2020-01-01"},
                                                           {"dueDate": "2021-06-01"}]})
        await _put(client, {**goal, "id": "g2", "target": [{"dueDate": "2020-09-01"}]})
        assert len(_hull_rows(path, "Goal.target-date")) == 1  # g1's, 2020-01-01..2021-06-01
        # both bounds on one value (g2) or on two different values (g1, search.html#combining)
        window = [("target-date", "ge2020-08-01"), ("target-date", "lt2020-10-01")]
        assert await _ids(client, "Goal", window) == {"g1", "g2"}
        both = [("target-date", "ge2021-01-01"), ("target-date", "lt2020-06-01")]
        assert await _ids(client, "Goal", both) == {"g1"}
        # one value left: the hull row goes with the update
        await _put(client, {**goal, "id": "g1", "target": [{"dueDate": "2020-01-01"}]})
        assert _hull_rows(path, "Goal.target-date") == []
        assert await _ids(client, "Goal", both) == set()


async def test_a_file_indexed_before_hull_rows_is_searched_without_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    async with _client(path) as client:
        await _fill(client)
    _to_schema_1(path, hulls=False)
    with caplog.at_level(logging.INFO, logger="fhir_server.storage.sqlite_migrate"):
        async with _client(path) as client:
            await _searches_agree(client)
    assert any("date hull rows absent" in r.getMessage() for r in caplog.records)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM search_index_state").fetchall() == [("absent",)]
    conn.close()


_OPEN_STORE = """
import asyncio, sys
from fhir_server.storage.sqlite import SQLiteStore

async def main() -> None:
    store = await SQLiteStore.open(sys.argv[1])
    await store.close()

asyncio.run(main())
"""


async def test_a_second_process_waits_for_the_migration_lock(tmp_path: Path) -> None:
    """Two processes migrating one old file at once interned the system ids twice, which
    emptied every token search with a system (break-diff finding 1). The migration holds
    `<file>-migrate.lock`: here the test holds it as a migrating process would, and a
    real second process opening the file must leave it untouched until the lock goes."""
    import fcntl
    import subprocess
    import sys
    import time

    path = tmp_path / "old.db"
    async with _client(path) as client:
        await _fill(client)
    _to_schema_1(path)
    root = Path(__file__).resolve().parents[1]
    with open(f"{path}-migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        opener = subprocess.Popen([sys.executable, "-c", _OPEN_STORE, str(path)], cwd=root)
        try:
            time.sleep(2.0)
            assert opener.poll() is None  # still waiting for the lock
            conn = sqlite3.connect(path)
            assert conn.execute("PRAGMA user_version").fetchone() == (1,)
            assert conn.execute(
                "SELECT DISTINCT typeof(system) FROM search_token"
            ).fetchall() == [("text",)]
            conn.close()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        assert opener.wait(timeout=60) == 0
    finally:
        opener.kill()
    async with _client(path) as client:  # migrated once, by the other process
        await _searches_agree(client)


def _code_system(n: int) -> dict[str, Any]:
    """A small CodeSystem, as a terminology preload writes them first."""
    return {
        "resourceType": "CodeSystem", "id": f"cs{n}", "url": f"http://example.org/cs/{n}",
        "version": "1.0.0", "name": f"LocalCodes{n}", "status": "active",
        "content": "complete", "caseSensitive": True,
        "concept": [{"code": f"c{k}", "display": f"Local code {k}"} for k in range(3)],
    }  # fmt: skip


async def test_clinical_bodies_written_after_a_terminology_preload_are_compressed(
    tmp_path: Path,
) -> None:
    """The first dictionary is sampled from CodeSystems only; the Observations that follow
    get one of their own and take a fraction of the bytes."""
    import zlib

    from fhir_server.storage import sqlite_bodies

    path = tmp_path / "preload.db"
    async with _client(path) as client:
        for n in range(250):
            await _put(client, _code_system(n))
        for n in range(60):
            await _put(client, _glucose(f"g{n}", str(90 + n)))
        found = await _ids(client, "Observation", {"code": f"{LOINC}|2339-0", "_count": "100"})
        assert found == {f"g{n}" for n in range(60)}
        response = await client.get("Observation/g59")
        assert response.status_code == 200
        read = response.json()
        read.pop("meta")
        assert read == _glucose("g59", "149")
    conn = sqlite3.connect(path)
    try:
        dictionaries = dict(conn.execute("SELECT id, dictionary FROM body_dictionaries"))
        assert len(dictionaries) == 2
        (code_systems_only,) = [d for d in dictionaries.values() if b"Observation" not in d]
        bodies = [
            bytes(body) for (body,) in conn.execute(
                "SELECT body FROM resources WHERE type = 'Observation' AND id LIKE 'g%'"
            )
        ]  # fmt: skip
    finally:
        conn.close()
    later = [b for b in bodies if dictionaries[int.from_bytes(b[2:10], "big")] != code_systems_only]
    assert len(later) == 60 - sqlite_bodies._SAMPLES_PER_TYPE + 1
    stored = sum(map(len, later)) / len(later)
    with_code_systems = 0
    for body in later:
        inflater = zlib.decompressobj(-15, zdict=dictionaries[int.from_bytes(body[2:10], "big")])
        plain = inflater.decompress(body[10:]) + inflater.flush()
        deflater = zlib.compressobj(3, zlib.DEFLATED, -15, zdict=code_systems_only)
        with_code_systems += len(deflater.compress(plain) + deflater.flush()) + 10
    assert stored < 0.6 * with_code_systems / len(later), (stored, with_code_systems)
