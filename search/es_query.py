"""`_text` and `_content` as Elasticsearch query DSL, with the semantics of the SQLite
FTS5 index (search.fulltext): the comma-separated alternatives of a value are ORed; the
phrases of one alternative (its whitespace-separated words) must all occur; a phrase's
tokens ("e-mail" -> e, mail; 王芳 -> 王, 芳) must occur together, in order.

Each phrase becomes a `bool` that any language's fields may satisfy:

- `multi_match` of type `phrase` over the folded and language fields (the query text
  is analysed by each field's own analyzer, so "fractures" is stemmed for english);
- `multi_match` with operator `and` over the CJK fields, on the phrase's characters
  written together: the bigram filter turns 王芳 into 王, 王芳, 芳, and requiring all
  of them requires the two characters adjacent and in this order (芳王 does not match).

User input only ever reaches `query` strings of match queries, never query_string
syntax, so it cannot inject operators. `_text` searches the narrative fields,
`_content` the narrative and content fields (as FTS5, both with the same weight).
"""

from __future__ import annotations

from typing import Any

from search import es_mappings
from search.fulltext import TextQuery, is_split_char

_FIELDS = {"narrative": ("narrative",), "content": ("narrative", "content")}


def _joined(phrase: tuple[str, ...]) -> str:
    """The phrase's tokens as text for the CJK fields: characters of scripts written
    without spaces are put back together, other tokens keep a space between them."""
    out = phrase[0]
    for before, token in zip(phrase, phrase[1:], strict=False):
        together = is_split_char(before[-1]) and is_split_char(token[0])
        out += token if together else " " + token
    return out


def phrase_clause(field: str, phrase: tuple[str, ...]) -> dict[str, Any]:
    names = _FIELDS[field]
    phrase_fields = [f"{n}_{s}" for n in names for s in es_mappings.phrase_suffixes()]
    cjk_fields = [f"{n}_{s}" for n in names for s in (es_mappings.CJK, es_mappings.CHINESE)]
    return {
        "bool": {
            "should": [
                {
                    "multi_match": {
                        "query": " ".join(phrase),
                        "type": "phrase",
                        "fields": phrase_fields,
                    }
                },
                {
                    "multi_match": {
                        "query": _joined(phrase),
                        "type": "best_fields",
                        "operator": "and",
                        "fields": cjk_fields,
                    }
                },
            ],
            "minimum_should_match": 1,
        }
    }


def text_clause(text: TextQuery) -> dict[str, Any] | None:
    """The query of `text`, or None when it can match nothing (no alternative has a word)."""
    alternatives = [
        {"bool": {"must": [phrase_clause(text.field, phrase) for phrase in phrases]}}
        for phrases in text.alternatives
        if phrases
    ]
    if not alternatives:
        return None
    if len(alternatives) == 1:
        return alternatives[0]
    return {"bool": {"should": alternatives, "minimum_should_match": 1}}


def search_body(
    text: TextQuery, resource_type: str | None, limit: int
) -> dict[str, Any] | None:
    """The whole search request body: the text clause, filtered to resource documents
    (of `resource_type`), best first, ties by id; None when nothing can match."""
    clause = text_clause(text)
    if clause is None:
        return None
    filters: list[dict[str, Any]] = [{"term": {"kind": es_mappings.KIND_RESOURCE}}]
    if resource_type is not None:
        filters.append({"term": {"resourceType": resource_type}})
    return {
        "query": {"bool": {"must": [clause], "filter": filters}},
        "size": limit,
        "sort": [{"_score": "desc"}, {"resourceType": "asc"}, {"id": "asc"}],
        "_source": ["resourceType", "id"],
        "track_total_hits": False,
    }
