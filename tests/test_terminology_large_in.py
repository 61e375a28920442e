"""Value set members are looked up in chunks, never in one statement with more SQL
variables than SQLite binds (999 before 3.32, 250,000 after): a token :in over a value
set of 260,000 codes was a 500 (break-new finding 21). Here the limit is lowered to 999
on the reader and a page of 1,500 members is expanded."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from fhir_server.storage.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

SYSTEM = "http://example.org/CodeSystem/big"
VALUE_SET = "http://example.org/ValueSet/big"
CODES = 1_500  # more than the lowered limit below


async def test_a_page_of_more_members_than_sqlite_binds(
    store: SQLiteStore, client: httpx.AsyncClient
) -> None:
    code_system = {
        "resourceType": "CodeSystem", "id": "big", "url": SYSTEM, "name": "Big",
        "status": "active", "content": "complete",
        "concept": [{"code": f"C{i:05d}", "display": f"Concept {i}"} for i in range(CODES)],
    }  # fmt: skip
    value_set = {"resourceType": "ValueSet", "id": "big", "url": VALUE_SET, "status": "active",
                 "compose": {"include": [{"system": SYSTEM}]}}  # fmt: skip
    for resource in (code_system, value_set):
        r = await client.put(f"{resource['resourceType']}/big", json=resource)
        assert r.status_code == 201, r.text
    store._reads().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # noqa: SLF001
    r = await client.get("ValueSet/$expand", params={"url": VALUE_SET, "count": str(CODES)})
    assert r.status_code == 200, r.text
    contains = r.json()["expansion"]["contains"]
    assert len(contains) == CODES
    assert (contains[0]["code"], contains[0]["display"]) == ("C00000", "Concept 0")
    assert contains[-1]["code"] == f"C{CODES - 1:05d}"
