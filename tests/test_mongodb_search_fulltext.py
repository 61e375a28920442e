"""`_text` and `_content` on the MongoDB store: the full-text tests of the SQLite store
(tests/test_fulltext.py), run again with the MongoDB store (mongomock) and a full-text
index given to it through search.fulltext.FullTextIndex.

The index here is the SQLite FTS5 one (SQLiteFullText) on a side file that a write hook
of the store keeps current: the interface is what mongodb_search uses, whichever index
answers it (Elasticsearch in production, tests/elasticsearch_fake.py for its own
request bodies). So the result sets must be those of the SQLite store exactly.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from storage_backends import REAL_MONGODB, close_backend, open_backend

from fhir_server.storage import sqlite_fulltext
from fhir_server.storage.base import Context, StoredResource
from fhir_server.storage.sqlite_fulltext import SQLiteFullText
from search.query import parse_search
from test_fulltext import stored  # noqa: F401 - its fixture
from test_fulltext import (  # noqa: F401 - collected here, on MongoDB
    test_bad_text_input_is_a_400_naming_the_parameter,
    test_fts_syntax_in_input_is_plain_words,
    test_sort_by_score_is_best_first_and_pages,
    test_text_and_content_give_exact_result_sets,
    test_updates_and_deletes_keep_the_index_current,
)
from tests.search_index_db import RESOURCES_TABLE

pytestmark = pytest.mark.anyio


class _SideIndex:
    """A FTS5 file mirroring the MongoDB store's writes, as a FullTextIndex."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute(RESOURCES_TABLE)
        for statement in sqlite_fulltext.SCHEMA:
            self.conn.execute(statement)
        self.index = SQLiteFullText(self.conn)

    async def on_write(self, txn: Any, written: StoredResource) -> None:
        tenant = txn.context.tenant
        key = (tenant, written.resource_type, written.id)
        self.conn.execute(
            "INSERT INTO resources (tenant, type, id, version, last_updated, deleted) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, type, id) DO UPDATE SET "
            "version = excluded.version, deleted = excluded.deleted",
            (*key, written.version, written.last_updated, int(written.deleted)),
        )
        if written.deleted or written.resource is None:
            await self.index.remove(*key)
        else:
            await self.index.index(tenant, written.resource)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Any]:
    opened, token = await open_backend("mongodb" if REAL_MONGODB else "mongomock", tmp_path)
    side = _SideIndex(tmp_path / "fulltext.db")
    opened.write_hooks.append(side.on_write)
    opened.fulltext = side.index
    try:
        yield opened
    finally:
        side.conn.close()
        await close_backend(opened, token)


@pytest.mark.usefixtures("stored")
async def test_text_combines_with_other_parameters_and_chains(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "Condition",
        params={"_text": "hypertension", "subject.name": "müller", "_total": "accurate"},
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["total"] == 3
    assert {entry["resource"]["id"] for entry in bundle["entry"]} == {"c1", "c2", "c3"}


@pytest.mark.usefixtures("stored")
async def test_text_beyond_the_hit_bound_is_a_400(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_server.storage import mongodb_search

    monkeypatch.setattr(mongodb_search, "MAX_TEXT_HITS", 2)
    with pytest.raises(Exception) as caught:
        await store.search(Context(), parse_search("Condition", [("_text", "hypertension")]))
    outcome = caught.value.outcome()  # type: ignore[attr-defined]
    assert outcome["issue"][0]["code"] == "too-costly"
    assert outcome["issue"][0]["expression"] == ["_text"]
    found = await store.search(Context(), parse_search("Condition", [("_text", "diabetes")]))
    assert [resource.id for resource in found.resources] == ["c3"]
