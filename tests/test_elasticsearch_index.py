"""The Elasticsearch search index on the wire: the real `AsyncElasticsearch` client
talks to tests/elasticsearch_fake.py (a recording HTTP server on 127.0.0.1, because no
Elasticsearch can run in CI), and the request bodies it sends (index creation with
mappings, bulk actions, queries) are compared with the recorded expectations in
tests/elasticsearch_expected/. Set FHIR_FUSION_RECORD_ES=1 to rewrite those files
after an intended change, and review their diff.

What this cannot check: how Elasticsearch analyses and ranks. That is
test_elasticsearch_cluster.py, against a real cluster when
FHIR_FUSION_TEST_ELASTICSEARCH is set.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from elasticsearch_fake import FakeElasticsearch
from search import es_mappings
from search.elasticsearch_index import ElasticsearchConfig, ElasticsearchIndex, index_name
from search.fulltext import Change, text_query

pytestmark = pytest.mark.anyio
EXPECTED = Path(__file__).parent / "elasticsearch_expected"


def _matches_recording(name: str, actual: Any) -> None:
    path = EXPECTED / name
    text = json.dumps(actual, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    if os.environ.get("FHIR_FUSION_RECORD_ES"):
        path.write_text(text, encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8")) == actual, f"differs from {path}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeElasticsearch]:
    server = await FakeElasticsearch().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def index(fake: FakeElasticsearch) -> AsyncIterator[ElasticsearchIndex]:
    opened = ElasticsearchIndex.connect(fake.url)
    try:
        yield opened
    finally:
        await opened.close()


def _condition(cid: str, div: str, version: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "meta": {"versionId": str(version), "lastUpdated": "2026-12-04T10:00:00.000000+00:00"},
        "text": {"status": "generated", "div": div},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003",
                             "display": "Hypertensive disorder"}]},  # fmt: skip
        "subject": {"reference": "Patient/p1"},
        **extra,
    }


async def test_index_creation_sends_the_recorded_mappings(
    fake: FakeElasticsearch, index: ElasticsearchIndex
) -> None:
    await index.check()
    assert await index.ensure_index("default") == "fhir-fusion-default"
    (create,) = fake.of("PUT", "/fhir-fusion-default")
    _matches_recording("create_index.json", create.json())
    body = create.json()
    # the properties the design rests on, checked here and not only in the recording
    props = body["mappings"]["properties"]
    assert props["narrative_german"] == {"type": "text", "analyzer": "german"}
    assert props["content_cjk"] == {"type": "text", "analyzer": "fhir_cjk"}
    assert "narrative_zh" not in props  # no Chinese plugin on this cluster
    grams = body["settings"]["analysis"]["filter"]["fhir_cjk_grams"]
    assert grams == {"type": "cjk_bigram", "output_unigrams": True}
    assert body["settings"]["number_of_replicas"] == 0  # ?replicas=0 in the URL
    # the 9.x client asks for the 9 REST compatibility (deploy/ runs Elasticsearch 9)
    assert "compatible-with=9" in create.headers["accept"]
    assert fake.of("GET", "/_cat/plugins")[0].params == {"format": "json"}
    await index.ensure_index("default")  # known now: no second request
    assert len(fake.of("PUT", "/fhir-fusion-default")) == 1


async def test_a_chinese_plugin_found_at_start_up_analyses_chinese(
    fake: FakeElasticsearch, index: ElasticsearchIndex
) -> None:
    fake.plugins = ["analysis-icu", "analysis-ik"]
    await index.check()
    await index.ensure_index("default")
    props = fake.of("PUT", "/fhir-fusion-default")[0].json()["mappings"]["properties"]
    assert props["narrative_zh"] == {
        "type": "text", "analyzer": "ik_max_word", "search_analyzer": "ik_smart"
    }
    patient = {"resourceType": "Patient", "id": "p-wang", "language": "zh-CN",
               "meta": {"versionId": "1"}, "text": {"div": "<div>王芳，高血压</div>"}}  # fmt: skip
    assert await index.apply("default", [Change("Patient", "p-wang", 1, patient)]) == [None]
    document = fake.of("PUT", "/_bulk")[0].ndjson()[1]
    assert document["narrative_zh"] == "王芳，高血压"  # whole: the analyzer segments it
    assert document["lang"] == "zh"


async def test_bulk_actions_match_the_recording(
    fake: FakeElasticsearch, index: ElasticsearchIndex
) -> None:
    changes = [
        Change("Condition", "c-en", 3, _condition(
            "c-en", '<div xmlns="http://www.w3.org/1999/xhtml">Essential <b>hypertension</b></div>',
            3, language="en-GB")),
        Change("Condition", "c-de", 1, _condition(
            "c-de", '<div xmlns="http://www.w3.org/1999/xhtml" lang="de">Bluthochdruck</div>')),
        Change("Patient", "p-wang", 2, {
            "resourceType": "Patient", "id": "p-wang", "meta": {"versionId": "2"},
            "text": {"div": '<div xmlns="http://www.w3.org/1999/xhtml" xml:lang="zh">王芳</div>'},
            "name": [{"text": "王芳"}]}),
        Change("Condition", "c-gone", 4, None),
    ]  # fmt: skip
    assert await index.apply("tenant-a", changes) == [None, None, None, None]
    (bulk,) = fake.of("PUT", "/_bulk")
    assert bulk.params == {}  # no refresh: near real time
    assert bulk.headers["content-type"].startswith("application/vnd.elasticsearch+x-ndjson")
    _matches_recording("bulk_actions.json", bulk.ndjson())
    actions = bulk.ndjson()
    assert actions[1]["narrative_english"] == "Essential hypertension"
    assert actions[3]["narrative_german"] == "Bluthochdruck"
    assert actions[5]["narrative_cjk"] == "王芳"  # not split into 王 芳 as for FTS5
    assert actions[6] == {"delete": {"_index": "fhir-fusion-tenant-a", "_id": "Condition/c-gone",
                                     "version": 4, "version_type": "external"}}  # fmt: skip
    # replaying the same changes is harmless: 409 / 404 count as applied
    assert await index.apply("tenant-a", changes) == [None, None, None, None]
    assert fake.live() == {"Condition/c-en": 3, "Condition/c-de": 1, "Patient/p-wang": 2}


async def test_text_and_content_queries_match_the_recording(
    fake: FakeElasticsearch, index: ElasticsearchIndex
) -> None:
    await index.ensure_index("default")
    fake.search_hits = [
        {"_index": "fhir-fusion-default", "_id": "Condition/c1", "_score": None,
         "_source": {"resourceType": "Condition", "id": "c1"}, "sort": [2.5, "Condition", "c1"]},
        {"_index": "fhir-fusion-default", "_id": "Condition/c3", "_score": None,
         "_source": {"resourceType": "Condition", "id": "c3"}, "sort": [0.75, "Condition", "c3"]},
    ]  # fmt: skip
    # _text=HYPERTENSION essential,王芳  (two alternatives; two words; one CJK phrase)
    hits = await index.query(
        "default", text_query("narrative", ["HYPERTENSION essential", "王芳"]), "Condition", 20
    )
    assert [(h.id, h.score) for h in hits] == [("c1", 2.5), ("c3", 0.75)]
    # _content=e-mail: one word of two tokens, a phrase
    await index.query("default", text_query("content", ["e-mail"]))
    first, second = (r.json() for r in fake.of("POST", "/fhir-fusion-default/_search"))
    _matches_recording("query_text.json", first)
    _matches_recording("query_content.json", second)
    alternatives = first["query"]["bool"]["must"][0]["bool"]["should"]
    words = alternatives[0]["bool"]["must"]
    assert [w["bool"]["should"][0]["multi_match"]["query"] for w in words] == [
        "HYPERTENSION", "essential"]  # fmt: skip (Elasticsearch analyzers fold case)
    cjk = alternatives[1]["bool"]["must"][0]["bool"]["should"]
    assert cjk[0]["multi_match"]["query"] == "王 芳"  # a phrase on the folded/language fields
    assert cjk[1]["multi_match"] == {  # all grams (王, 王芳, 芳) on the CJK fields
        "query": "王芳", "type": "best_fields", "operator": "and",
        "fields": ["narrative_cjk", "narrative_zh"]}  # fmt: skip
    assert first["query"]["bool"]["filter"] == [
        {"term": {"kind": "resource"}}, {"term": {"resourceType": "Condition"}}]  # fmt: skip
    assert "content_english" in second["query"]["bool"]["must"][0]["bool"]["must"][0][
        "bool"]["should"][0]["multi_match"]["fields"]  # fmt: skip


async def test_a_value_without_words_sends_no_query(
    fake: FakeElasticsearch, index: ElasticsearchIndex
) -> None:
    assert await index.query("default", text_query("narrative", ["--", "*"])) == []
    assert fake.of("POST", "/fhir-fusion-default/_search") == []


async def test_a_tenant_that_never_indexed_has_no_hits(
    fake: FakeElasticsearch, index: ElasticsearchIndex
) -> None:
    assert await index.query("other", text_query("narrative", ["asthma"])) == []
    assert fake.of("POST", "/fhir-fusion-other/_search")  # asked, answered 404


def test_index_names_keep_tenants_apart() -> None:
    assert index_name("fhir-fusion", "default") == "fhir-fusion-default"
    upper, lower = index_name("fhir-fusion", "Clinic"), index_name("fhir-fusion", "clinic")
    assert upper != lower and upper.startswith("fhir-fusion-clinic-")
    assert index_name("x", "a/b") != index_name("x", "a_b")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("elasticsearch://localhost", ElasticsearchConfig("http://localhost:9200")),
        ("elasticsearch+https://u:p%40ss@es.example:9243?prefix=fhir&replicas=2",
         ElasticsearchConfig("https://es.example:9243", "fhir", 2, "u", "p@ss")),
        ("http://127.0.0.1:9201", ElasticsearchConfig("http://127.0.0.1:9201")),
    ],
)  # fmt: skip
def test_urls(url: str, expected: ElasticsearchConfig) -> None:
    assert ElasticsearchConfig.parse(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mongodb://localhost", "mongodb: is not an Elasticsearch URL"),
        ("elasticsearch://h?prefix=Bad", "index prefix 'Bad'"),
        ("elasticsearch://h?replicas=x", "replicas='x'"),
    ],
)
def test_bad_urls_name_the_problem(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ElasticsearchConfig.parse(url)


@pytest.mark.parametrize(
    ("resource", "suffix"),
    [
        ({"language": "de-CH"}, "german"),
        ({"language": "fr"}, "french"),
        ({"text": {"div": '<div xmlns="http://www.w3.org/1999/xhtml" lang="es">x</div>'}},
         "spanish"),
        ({"language": "ja"}, "cjk"),
        ({"language": "zh-Hans"}, "cjk"),
        ({"language": "pl"}, "std"),  # no built-in Polish analyzer
        ({}, "std"),
    ],
)  # fmt: skip
def test_language_chooses_the_fields(resource: dict[str, Any], suffix: str) -> None:
    body = {"resourceType": "Basic", "id": "b", "meta": {"versionId": "1"},
            "text": {"div": "<div>x</div>"}, **resource}  # fmt: skip
    assert f"narrative_{suffix}" in es_mappings.document(body, None)


async def test_an_existing_index_keeps_the_analysis_it_was_made_with(
    fake: FakeElasticsearch, index: ElasticsearchIndex
) -> None:
    await index.ensure_index("default")  # made without a Chinese plugin
    fake.plugins = ["analysis-smartcn"]  # installed later
    later = ElasticsearchIndex.connect(fake.url)
    try:
        await later.check()
        patient = {"resourceType": "Patient", "id": "p", "language": "zh", "meta": {"versionId": "1"},
                   "text": {"div": "<div>王芳</div>"}}  # fmt: skip
        assert await later.apply("default", [Change("Patient", "p", 1, patient)]) == [None]
        assert len(fake.of("GET", "/fhir-fusion-default/_mapping")) == 1
        document = fake.of("PUT", "/_bulk")[-1].ndjson()[1]
        assert "narrative_cjk" in document and "narrative_zh" not in document
        # recreate (reindex --recreate-search-index) makes it with the plugin
        await later.ensure_index("default", recreate=True)
        props = fake.of("PUT", "/fhir-fusion-default")[-1].json()["mappings"]["properties"]
        assert props["narrative_zh"] == {"type": "text", "analyzer": "smartcn"}
    finally:
        await later.close()


async def test_index_and_remove_one_resource(
    fake: FakeElasticsearch, index: ElasticsearchIndex
) -> None:
    await index.index("default", _condition("c1", "<div>Asthma</div>", 2))
    assert fake.live() == {"Condition/c1": 2}
    fake.fail_ids = {"Condition/c2"}
    with pytest.raises(Exception, match="refused the document: index 503"):
        await index.index("default", _condition("c2", "<div>Asthma</div>"))
    await index.remove("default", "Condition", "c1")
    (delete,) = fake.of("DELETE", "/fhir-fusion-default/_doc/Condition/c1")
    assert delete.params == {}
    assert fake.live() == {}
    await index.remove("default", "Condition", "never-indexed")  # 404 is fine
