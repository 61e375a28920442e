"""search.fulltext.FullTextIndex as both backends implement it: `apply` keeps the
newest version (SQLite FTS5 here, on a real file; Elasticsearch's external versions in
test_elasticsearch_index.py)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore
from fhir_server.storage.sqlite_fulltext import SQLiteFullText
from search.elasticsearch_index import ElasticsearchIndex
from search.fulltext import Change, FullTextIndex, text_query

pytestmark = pytest.mark.anyio


def _condition(text: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "text": {"status": "generated",
                     "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{text}</div>'}}  # fmt: skip


def _implements(index: FullTextIndex) -> FullTextIndex:
    return index  # the type checker checks both backends against the protocol


async def test_sqlite_apply_keeps_the_newest_version(store: SQLiteStore) -> None:
    for text in ("Asthma", "Hypertension"):
        async with store.transaction(Context()) as txn:
            await txn.update(_condition(text))
    index = _implements(SQLiteFullText(store._writer))
    asthma = text_query("narrative", ["asthma"])
    hypertension = text_query("narrative", ["hypertension"])
    # a late delivery of version 1 changes nothing: version 2 is stored
    assert await index.apply("default", [Change("Condition", "c1", 1, _condition("Asthma"))]) \
        == [None]
    assert await index.query("default", asthma) == []
    assert [h.id for h in await index.query("default", hypertension, "Condition")] == ["c1"]
    # the current version's delete removes it; an unknown resource is reported
    results = await index.apply("default", [
        Change("Condition", "c1", 2, None), Change("Condition", "nope", 1, None)])  # fmt: skip
    assert results == [None, "Condition/nope is not stored"]
    assert await index.query("default", hypertension) == []


def test_elasticsearch_implements_the_protocol() -> None:
    index = ElasticsearchIndex.connect("elasticsearch://127.0.0.1:1")  # no request made
    assert _implements(index) is index
