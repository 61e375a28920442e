"""Full-text search (_text on the narrative, _content on all strings; R4 search.html#text)
on a real SQLite file through the ASGI app, and the ranking of the FTS5 index."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore
from fhir_server.storage.sqlite_fulltext import SQLiteFullText, match_expression
from search.fulltext import documents, narrative_text, phrases, text_query

pytestmark = pytest.mark.anyio


def _narrative(text: str) -> dict[str, str]:
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{text}</div>'}


CONDITIONS: dict[str, dict[str, Any]] = {
    # the term twice in a short narrative: ranks above c2 and c3
    "c1": {
        "text": _narrative("<p>Essential hypertension.</p><p>Hypertension controlled.</p>"),
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "59621000",
                             "display": "Essential hypertension"}]},
    },
    "c2": {
        "text": _narrative(
            "<p>Patient reports headaches; blood pressure elevated on three visits, "
            "family history of stroke, diet and exercise advised; hypertension suspected "
            "and ambulatory monitoring planned over the coming weeks.</p>"
        ),
        "code": {"text": "Suspected high blood pressure"},
    },
    "c3": {
        "text": _narrative("<b>Type 2 diabetes</b> &amp; hypertension"),
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006",
                             "display": "Diabetes mellitus type 2"}]},
    },
    # "asthma" only in the coded content, not in the narrative
    "c4": {
        "text": _narrative("Seen in clinic for breathing difficulty."),
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195967001",
                             "display": "Asthma"}]},
    },
}

PATIENTS: dict[str, dict[str, Any]] = {
    "p-wang-fang": {
        "text": _narrative("患者王芳，女，高血压病史。"),
        "name": [{"family": "王", "given": ["芳"], "text": "王芳"}],
    },
    "p-wang-ming": {
        "text": _narrative("患者王明，男，糖尿病。"),
        "name": [{"family": "王", "given": ["明"], "text": "王明"}],
    },
    "p-jose": {
        "text": _narrative("José Müller, Café owner"),
        "name": [{"family": "Müller", "given": ["José"]}],
    },
}


@pytest.fixture
async def stored(client: httpx.AsyncClient) -> None:
    for rid, body in CONDITIONS.items():
        resource = {"resourceType": "Condition", "id": rid,
                    "subject": {"reference": "Patient/p-jose"}, **body}
        assert (await client.put(f"Condition/{rid}", json=resource)).status_code == 201
    for rid, body in PATIENTS.items():
        resource = {"resourceType": "Patient", "id": rid, **body}
        assert (await client.put(f"Patient/{rid}", json=resource)).status_code == 201


async def _ids(client: httpx.AsyncClient, path: str, params: Any) -> list[str]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return [entry["resource"]["id"] for entry in response.json().get("entry", [])]


@pytest.mark.usefixtures("stored")
@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("Condition", {"_text": "hypertension"}, {"c1", "c2", "c3"}),
        ("Condition", {"_text": "HYPERTENSION essential"}, {"c1"}),  # words ANDed, any case
        ("Condition", {"_text": "diabetes"}, {"c3"}),  # text inside <b>, tags stripped
        ("Condition", {"_text": "asthma"}, set()),  # only in the coding, not the narrative
        ("Condition", {"_content": "asthma"}, {"c4"}),
        ("Condition", {"_content": "suspected high blood"}, {"c2"}),  # CodeableConcept.text
        ("Condition", {"_text": "asthma,diabetes"}, {"c3"}),  # comma: OR
        ("Condition", [("_text", "hypertension"), ("_text", "stroke")], {"c2"}),  # AND
        ("Condition", {"_text": "hypertension", "code": "59621000"}, {"c1"}),
        ("Condition", {"_content": "59621000"}, {"c1"}),  # codes are content too
        ("Condition", {"_content": "snomed"}, set()),  # code system URLs are not
        ("Patient", {"_text": "王芳"}, {"p-wang-fang"}),
        ("Patient", {"_text": "高血压"}, {"p-wang-fang"}),
        ("Patient", {"_text": "王"}, {"p-wang-fang", "p-wang-ming"}),  # one character
        ("Patient", {"_text": "芳王"}, set()),  # characters must be adjacent, in order
        ("Patient", {"_content": "王明"}, {"p-wang-ming"}),
        ("Patient", {"_text": "cafe"}, {"p-jose"}),  # accents folded
        ("Patient", {"_content": "JOSE muller"}, {"p-jose"}),
        ("Patient", {"_text": "hypertension"}, set()),  # type filter applies
    ],
)
async def test_text_and_content_give_exact_result_sets(
    client: httpx.AsyncClient, path: str, params: Any, expected: set[str]
) -> None:
    assert set(await _ids(client, path, params)) == expected


@pytest.mark.usefixtures("stored")
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"', set()),
        ("NEAR(hypertension", set()),  # the phrase "near hypertension": in no narrative
        ("hypertension*", {"c1", "c2", "c3"}),  # * is a separator, not a prefix query
        ("hyper*", set()),  # no prefix matching: hyper is a word of its own
        ("hypertension OR asthma", set()),  # OR is a plain word, not an operator
        ('essential" OR "asthma', set()),
        ("content : asthma", set()),  # not a column filter
        ("'; DROP TABLE resources; --", set()),
        ("-hypertension", {"c1", "c2", "c3"}),  # not a negation
        ("(essential)", {"c1"}),
        ("^essential", {"c1"}),
    ],
)
async def test_fts_syntax_in_input_is_plain_words(
    client: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    assert set(await _ids(client, "Condition", {"_text": value})) == expected
    assert set(await _ids(client, "Condition", {"_text": "hypertension"})) == {"c1", "c2", "c3"}


@pytest.mark.usefixtures("stored")
async def test_bad_text_input_is_a_400_naming_the_parameter(client: httpx.AsyncClient) -> None:
    too_long = " ".join(f"w{n}" for n in range(40))
    for name, value in (("_text", too_long), ("_text:exact", "x"), ("_content:contains", "x")):
        response = await client.get("Condition", params={name: value})
        assert response.status_code == 400, name
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["expression"] == [name]


@pytest.mark.usefixtures("stored")
async def test_updates_and_deletes_keep_the_index_current(client: httpx.AsyncClient) -> None:
    resource = {"resourceType": "Condition", "id": "c4", "subject": {"reference": "Patient/p"},
                "text": _narrative("Chronic obstructive pulmonary disease")}
    assert (await client.put("Condition/c4", json=resource)).status_code == 200
    assert await _ids(client, "Condition", {"_text": "pulmonary"}) == ["c4"]
    assert await _ids(client, "Condition", {"_content": "asthma"}) == []
    assert (await client.delete("Condition/c1")).status_code in (200, 204)
    assert set(await _ids(client, "Condition", {"_text": "hypertension"})) == {"c2", "c3"}


@pytest.mark.usefixtures("stored")
async def test_bm25_ranks_dense_short_narratives_first(store: SQLiteStore) -> None:
    index = SQLiteFullText(store._reader)
    hits = await index.query("default", text_query("narrative", ["hypertension"]), "Condition")
    # c1: twice in 4 words; c3: once in 4 words; c2: once in 30 words
    assert [hit.id for hit in hits] == ["c1", "c3", "c2"]
    assert hits[0].score > hits[1].score > hits[2].score > 0
    other_tenant = await index.query("other", text_query("narrative", ["hypertension"]))
    assert other_tenant == []


def test_documents_strip_tags_and_skip_server_metadata() -> None:
    resource = {
        "resourceType": "Observation",
        "meta": {"versionId": "3", "lastUpdated": "2024-01-01T00:00:00Z"},
        "text": _narrative("<table><tr><td>Hb</td><td>13 g/dL &lt; normal</td></tr></table>"),
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "presentedForm": [{"contentType": "text/plain", "data": "SGVsbG8="}],
    }
    assert narrative_text(resource) == "Hb 13 g/dL < normal"
    docs = documents(resource)
    assert docs.narrative == "Hb 13 g/dL < normal"
    content = docs.content  # the other strings: the narrative is not repeated
    assert "718-7" in content and "Hb" not in content and "text/plain" in content
    assert "loinc" not in content and "SGVsbG8" not in content and "2024" not in content


def test_queries_are_quoted_phrases() -> None:
    assert phrases('e-mail NEAR( "x" 王芳') == (("e", "mail"), ("NEAR",), ("x",), ("王", "芳"))
    query = text_query("content", ['a"b', "*"])
    assert match_expression(query) == '({narrative content} : "a b")'
    assert match_expression(text_query("narrative", ["*", "()"])) is None


async def test_capability_statement_lists_text_and_content(client: httpx.AsyncClient) -> None:
    resources = (await client.get("metadata")).json()["rest"][0]["resource"]
    by_type = {entry["type"]: entry for entry in resources}
    condition = {p["name"]: p for p in by_type["Condition"]["searchParam"]}
    assert condition["_text"] == {
        "name": "_text", "type": "string",
        "definition": "http://hl7.org/fhir/SearchParameter/DomainResource-text",
    }  # fmt: skip
    assert condition["_content"]["definition"] == (
        "http://hl7.org/fhir/SearchParameter/Resource-content"
    )
    bundle = {p["name"] for p in by_type["Bundle"]["searchParam"]}
    assert "_content" in bundle and "_text" not in bundle  # a Bundle has no narrative


@pytest.mark.usefixtures("stored")
async def test_sort_by_score_is_best_first_and_pages(client: httpx.AsyncClient) -> None:
    params = {"_text": "hypertension", "_sort": "_score"}
    assert await _ids(client, "Condition", params) == ["c1", "c3", "c2"]
    assert await _ids(client, "Condition", {**params, "_sort": "-_score"}) == ["c2", "c3", "c1"]
    seen = []
    response = await client.get("Condition", params={**params, "_count": "1"})
    while True:
        seen += [entry["resource"]["id"] for entry in response.json().get("entry", [])]
        links = {link["relation"]: link["url"] for link in response.json()["link"]}
        if "next" not in links:
            break
        response = await client.get(links["next"])
    assert seen == ["c1", "c3", "c2"]
    no_text = await client.get("Condition", params={"_sort": "_score"})
    assert no_text.status_code == 400
    assert no_text.json()["issue"][0]["expression"] == ["_sort"]


@pytest.mark.usefixtures("stored")
async def test_the_index_interface_removes_and_reindexes(store: SQLiteStore) -> None:
    """search.fulltext.FullTextIndex on SQLite: remove, index and query by (type, id)."""
    async with store.transaction(Context()) as txn:
        index = SQLiteFullText(txn.connection)
        query = text_query("content", ["asthma"])
        assert [hit.id for hit in await index.query("default", query)] == ["c4"]
        await index.remove("default", "Condition", "c4")
        assert await index.query("default", query) == []
        stored = await txn.read("Condition", "c4")
        assert stored is not None and stored.resource is not None
        await index.index("default", stored.resource)
        hits = await index.query("default", query, "Condition")
        assert [(hit.resource_type, hit.id) for hit in hits] == [("Condition", "c4")]
        with pytest.raises(KeyError):
            await index.index("default", {"resourceType": "Condition", "id": "unknown"})
