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
from fhir_server.storage import sqlite_fulltext
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


async def _ids(client: httpx.AsyncClient, rtype: str, params: dict[str, str]) -> set[str]:
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


def _to_schema_1(path: Path) -> None:
    """Rewrite a current file the way schema 1 laid it out: system URIs in the rows, an
    FTS5 table with its own content, versions_by_instant, user_version 1."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for table, columns in _V1_TABLES.items():
        names = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        selected = ", ".join(
            f"(SELECT uri FROM search_systems WHERE id = t.{n})" if n.endswith("system")
            else f"t.{n}" for n in names
        )  # fmt: skip
        conn.execute(f"CREATE TABLE {table}_v1 ({columns}) WITHOUT ROWID")
        conn.execute(f"INSERT INTO {table}_v1 ({', '.join(names)}) SELECT {selected} FROM {table} t")
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE {table}_v1 RENAME TO {table}")
        conn.execute(f"CREATE INDEX {table}_rid ON {table} (rid, param)")
    conn.execute("DROP TABLE search_systems")
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
    conn.execute("CREATE INDEX versions_by_instant ON versions (last_updated)")
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

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema")}
    assert "versions_by_instant" not in names
    assert {"search_token_rid", "search_composite_rid", "search_fulltext_docs"} <= names
    assert conn.execute(
        "SELECT DISTINCT typeof(system) FROM search_token"
    ).fetchall() == [("integer",)]
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
