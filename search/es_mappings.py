"""Elasticsearch index settings and mappings for clinical text, and the document one
resource becomes (search.elasticsearch_index sends them).

Per-language analysis: a document's text goes into the fields of its language only,
`narrative_<analyzer>` and `content_<analyzer>`, and a query searches every language's
fields (a field a document does not fill costs nothing). The language is the primary
subtag of Resource.language, else of the narrative div's `lang` (search.fulltext.language):

- a language with a built-in Elasticsearch analyzer (english, german, french, ... in
  LANGUAGE_ANALYZERS) gets its stemmer and stop words: "fractures" finds "fracture";
- Chinese, Japanese and Korean get `fhir_cjk`: the standard tokenizer, then a
  `cjk_bigram` filter emitting unigrams and bigrams of Han, kana and Hangul characters
  (character n-grams of length 1 and 2), so 王芳 is found as the bigram 王芳 and 王 alone
  as a unigram, while Latin words in the same text stay whole. (The plain `ngram`
  tokenizer would also cut every Latin word into one- and two-letter grams, which
  would make "bp" match inside "bypass".)
- Chinese gets a word segmenter instead when the cluster has one: the analysis-smartcn
  plugin (`smartcn`) or analysis-ik (`ik_max_word`, searched with `ik_smart`), found
  through `_cat/plugins` when an index is created; the index records its choice in its
  `_meta`, since analyzers cannot change after creation (`reindex --recreate` rebuilds
  an index with a plugin installed later);
- everything else (and a resource without a language) gets `fhir_folded`: the standard
  tokenizer, lowercase and ASCII folding, as the SQLite FTS5 index (case and accents
  folded, each ideograph a token).

Fields besides the text: `kind` ("resource"; later per-patient documents get their own
kind in the same index), `resourceType`, `id`, `version`, `lang` (the subtag, or "und")
and `patient` (the Patient ids the resource's subject/patient references, for later
per-patient documents and compartment filters). The text fields are left out of
`_source`: the store keeps the resource, the index only answers which ids match.
"""

from __future__ import annotations

from typing import Any

from search.fulltext import documents, language

# primary language subtag -> built-in Elasticsearch language analyzer
LANGUAGE_ANALYZERS: dict[str, str] = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "nl": "dutch",
    "pt": "portuguese",
    "sv": "swedish",
    "da": "danish",
    "no": "norwegian",
    "nb": "norwegian",
    "nn": "norwegian",
    "fi": "finnish",
    "ru": "russian",
    "el": "greek",
    "tr": "turkish",
    "ar": "arabic",
}
CJK_LANGUAGES = frozenset({"zh", "ja", "ko"})
FOLDED, CJK, CHINESE = "std", "cjk", "zh"  # field suffixes besides the language analyzers

# cluster plugin (as _cat/plugins names it) -> (index analyzer, search analyzer)
CHINESE_PLUGINS: dict[str, tuple[str, str]] = {
    "analysis-smartcn": ("smartcn", "smartcn"),
    "analysis-ik": ("ik_max_word", "ik_smart"),
}

KIND_RESOURCE = "resource"
TEXT_FIELDS = ("narrative", "content")

ANALYSIS: dict[str, Any] = {
    "filter": {
        "fhir_cjk_grams": {"type": "cjk_bigram", "output_unigrams": True},
    },
    "analyzer": {
        "fhir_folded": {
            "type": "custom",
            "tokenizer": "standard",
            "filter": ["lowercase", "asciifolding"],
        },
        "fhir_cjk": {
            "type": "custom",
            "tokenizer": "standard",
            "filter": ["cjk_width", "lowercase", "asciifolding", "fhir_cjk_grams"],
        },
    },
}


def chinese_plugin(components: list[str]) -> str | None:
    """The Chinese analysis plugin to use among the cluster's plugin components."""
    for plugin in CHINESE_PLUGINS:
        if plugin in components:
            return plugin
    return None


def phrase_suffixes() -> list[str]:
    """Field suffixes searched with phrase queries: the folded and language fields."""
    return [FOLDED, *sorted(set(LANGUAGE_ANALYZERS.values()))]


def _text_field(analyzer: str, search_analyzer: str | None = None) -> dict[str, Any]:
    field: dict[str, Any] = {"type": "text", "analyzer": analyzer}
    if search_analyzer and search_analyzer != analyzer:
        field["search_analyzer"] = search_analyzer
    return field


def index_body(plugin: str | None, shards: int = 1, replicas: int = 1) -> dict[str, Any]:
    """settings and mappings of a tenant's index; `plugin` the Chinese analysis plugin
    (None: Chinese goes to the n-gram fields)."""
    properties: dict[str, Any] = {
        "kind": {"type": "keyword"},
        "resourceType": {"type": "keyword"},
        "id": {"type": "keyword"},
        "version": {"type": "long"},
        "lang": {"type": "keyword"},
        "patient": {"type": "keyword"},
    }
    for name in TEXT_FIELDS:
        properties[f"{name}_{FOLDED}"] = _text_field("fhir_folded")
        properties[f"{name}_{CJK}"] = _text_field("fhir_cjk")
        for analyzer in sorted(set(LANGUAGE_ANALYZERS.values())):
            properties[f"{name}_{analyzer}"] = _text_field(analyzer)
        if plugin is not None:
            properties[f"{name}_{CHINESE}"] = _text_field(*CHINESE_PLUGINS[plugin])
    return {
        "settings": {
            "number_of_shards": shards,
            "number_of_replicas": replicas,
            "analysis": ANALYSIS,
        },
        "mappings": {
            "dynamic": "strict",
            "_meta": {"fhir_fusion_mapping": 1, "chinese_plugin": plugin},
            "_source": {"excludes": [f"{name}_*" for name in TEXT_FIELDS]},
            "properties": properties,
        },
    }


def field_suffix(lang: str | None, plugin: str | None) -> str:
    """The field suffix for text in language `lang` in an index made with `plugin`."""
    if lang is None:
        return FOLDED
    if lang == "zh" and plugin is not None:
        return CHINESE
    if lang in CJK_LANGUAGES:
        return CJK
    return LANGUAGE_ANALYZERS.get(lang, FOLDED)


def _patients(resource: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for key in ("subject", "patient"):
        ref = resource.get(key)
        text = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(text, str) and text.startswith("Patient/"):
            found.append(text.removeprefix("Patient/"))
    if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
        found.append(resource["id"])
    return found


def document(resource: dict[str, Any], plugin: str | None) -> dict[str, Any]:
    """The index document of a stored resource (meta.versionId is its version)."""
    docs = documents(resource, split=False)  # the analyzers split CJK text themselves
    lang = language(resource)
    suffix = field_suffix(lang, plugin)
    body: dict[str, Any] = {
        "kind": KIND_RESOURCE,
        "resourceType": resource["resourceType"],
        "id": resource["id"],
        "version": int((resource.get("meta") or {}).get("versionId", 1)),
        "lang": lang or "und",
    }
    if patients := _patients(resource):
        body["patient"] = patients
    if docs.narrative:
        body[f"narrative_{suffix}"] = docs.narrative
    if docs.content:
        body[f"content_{suffix}"] = docs.content
    return body
