"""The Elasticsearch index against a real cluster: the `_text`/`_content` semantics of
the SQLite FTS5 index (tests/test_fulltext.py) on Elasticsearch's own analysis.
Runs only when FHIR_FUSION_TEST_ELASTICSEARCH names a cluster (e.g.
elasticsearch://127.0.0.1:9200?replicas=0, Elasticsearch 9.x); each run uses indices
with its own prefix and deletes them afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from search.elasticsearch_index import ElasticsearchIndex, index_name
from search.fulltext import Change, text_query

CLUSTER = os.environ.get("FHIR_FUSION_TEST_ELASTICSEARCH")
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not CLUSTER,
        reason="no Elasticsearch cluster: set FHIR_FUSION_TEST_ELASTICSEARCH to run these "
        "(CI checks the request bodies in test_elasticsearch_index.py instead)",
    ),
]


def _resource(rtype: str, rid: str, div: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": rtype, "id": rid, "meta": {"versionId": "1"},
            "text": {"status": "generated", "div": f"<div>{div}</div>"}, **extra}  # fmt: skip


RESOURCES = [
    _resource("Condition", "c1", "Essential hypertension"),
    _resource("Condition", "c2", "Hypertension after stroke"),
    _resource("Condition", "c3", "Type 2 <b>diabetes</b> with hypertension",
              code={"text": "asthma"}),
    _resource("Patient", "p-wang-fang", "王芳，高血压", language="zh-CN"),
    _resource("Patient", "p-wang-ming", "王明"),
    _resource("Patient", "p-jose", "José, Café owner"),
    _resource("Condition", "c-de", "Bluthochdruck, Knochenbrüche", language="de"),
]  # fmt: skip


@pytest.fixture
async def index() -> AsyncIterator[ElasticsearchIndex]:
    assert CLUSTER is not None
    prefix = f"fhir-fusion-test-{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in CLUSTER else "?"
    opened = ElasticsearchIndex.connect(f"{CLUSTER}{sep}prefix={prefix}", refresh=True)
    await opened.check()
    changes = [Change(r["resourceType"], r["id"], 1, r) for r in RESOURCES]
    assert await opened.apply("default", changes) == [None] * len(changes)
    try:
        yield opened
    finally:
        await opened._client.indices.delete(index=index_name(prefix, "default"))
        await opened.close()


@pytest.mark.parametrize(
    ("rtype", "field", "values", "expected"),
    [
        ("Condition", "narrative", ["hypertension"], {"c1", "c2", "c3"}),
        ("Condition", "narrative", ["HYPERTENSION essential"], {"c1"}),
        ("Condition", "narrative", ["diabetes"], {"c3"}),
        ("Condition", "narrative", ["asthma"], set()),
        ("Condition", "content", ["asthma"], {"c3"}),
        ("Condition", "narrative", ["asthma", "diabetes"], {"c3"}),
        ("Condition", "narrative", ["knochenbruch"], {"c-de"}),  # german stemming
        ("Patient", "narrative", ["王芳"], {"p-wang-fang"}),
        ("Patient", "narrative", ["高血压"], {"p-wang-fang"}),
        ("Patient", "narrative", ["王"], {"p-wang-fang", "p-wang-ming"}),
        ("Patient", "narrative", ["芳王"], set()),
        ("Patient", "narrative", ["cafe"], {"p-jose"}),
    ],
)
async def test_same_results_as_fts5(
    index: ElasticsearchIndex, rtype: str, field: str, values: list[str], expected: set[str]
) -> None:
    hits = await index.query("default", text_query(field, values), rtype)  # type: ignore[arg-type]
    assert {hit.id for hit in hits} == expected


async def test_redelivery_and_old_versions_change_nothing(index: ElasticsearchIndex) -> None:
    newer = _resource("Condition", "c1", "Asthma", meta={"versionId": "2"})
    assert await index.apply("default", [Change("Condition", "c1", 2, newer)]) == [None]
    older = RESOURCES[0]
    assert await index.apply("default", [Change("Condition", "c1", 1, older)]) == [None]
    hits = await index.query("default", text_query("narrative", ["asthma"]), "Condition")
    assert {hit.id for hit in hits} == {"c1"}
