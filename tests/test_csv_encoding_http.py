"""A short CSV file not in UTF-8 is refused over HTTP until its charset is given, instead of
being stored garbled (break-feeds F25): $ingest on a real socket, a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from live_server import live_server

from fhir_server.storage.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio
ROWS = "Id,BIRTHDATE,FIRST,LAST,GENDER\ngbhttp1,1980-01-01,芳,王,F\n".encode("gb18030")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with live_server(tmp_path) as (url, _store):
        async with httpx.AsyncClient(base_url=f"{url}/fhir/", timeout=60) as http:
            yield http


async def test_a_one_row_gb18030_file_needs_its_charset(client: httpx.AsyncClient) -> None:
    refused = await client.post("$ingest?mapping=patients", content=ROWS,
                                headers={"Content-Type": "text/csv"})
    assert refused.status_code == 400, refused.text
    assert "give it" in refused.json()["issue"][0]["diagnostics"]
    assert not (await client.get("Patient", params={"identifier": "gbhttp1"})).json().get("entry")
    taken = await client.post("$ingest?mapping=patients", content=ROWS,
                              headers={"Content-Type": "text/csv; charset=gb18030"})
    assert taken.status_code == 200, taken.text
    (entry,) = (await client.get("Patient", params={"identifier": "gbhttp1"})).json()["entry"]
    assert entry["resource"]["name"][0]["family"] == "王"
