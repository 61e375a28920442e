"""Full-text search (`_text`, `_content`; R4 search.html#text): what a resource's
documents are, how user input becomes a safe query, and the interface every index
backend implements (SQLite FTS5 now: fhir_server.storage.sqlite_fulltext; Elasticsearch
with issue 4).

Each resource has two documents:

- narrative: `text.div` with its XHTML tags removed and entities decoded (`_text`);
- content: every string in the resource (the narrative's text included), except
  server metadata (`meta`), attachment payloads (`data`) and code system URLs
  (`system`), which are noise to a reader and bloat the index (`_content`).

Tokens, the same on both sides (documents and queries): words are runs of letters,
digits and combining marks, as the FTS5 `unicode61` tokenizer sees them, compared
without case and accents. Han, kana and Hangul characters are split into one token
each before indexing, so a Chinese name (王芳, often 2 characters) or a word inside a
Japanese or Korean sentence is found as a phrase of single characters.

Why not the FTS5 `trigram` tokenizer: it cannot match anything shorter than three
characters (most Chinese given names, "BP", "CT"), and it matches substrings inside
words ("art" in "heart"), which makes BM25 rank by n-gram coincidences. What this
choice costs: Chinese and Japanese ranking counts single characters, so a common
character weighs as little as it should but a two-character word is only as selective
as its rarest character's phrase match; Thai, Lao, Khmer and Myanmar text (no spaces,
not split here) is found only by whole space-delimited runs; the splitting costs one
regular-expression pass per document.

User input is never FTS syntax: every word is wrapped in double quotes as a phrase
(`NEAR(`, `*`, `"`, `AND`, `-` and parentheses are plain words or separators). Words
of one `_text` value must all occur (AND); a comma separates alternatives (OR), and a
repeated parameter is an AND, as for every FHIR search parameter. Results come in the
search's usual order; `_sort=_score` orders them by relevance (BM25), best first
(`-_score`: worst first).
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Field = Literal["narrative", "content"]
FIELD_OF_PARAMETER: dict[str, Field] = {"_text": "narrative", "_content": "content"}

MAX_DOCUMENT = 32_768  # characters per document; the rest of a huge resource is not indexed
MAX_QUERY_WORDS = 32  # per value; more is a 400 rather than an expensive query
_SKIPPED_KEYS = frozenset({"meta", "data", "system", "div", "resourceType"})

# Scripts written without spaces between words that are split per character.
_SPLIT_CHARS = (
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\U00020000-\U0003134f"  # CJK extensions B..G
)
_SPLIT = re.compile(f"([{_SPLIT_CHARS}])")
_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Documents:
    """The texts of one resource as an index stores them."""

    narrative: str
    content: str  # every other string; `_content` searches both


@dataclass(frozen=True)
class TextQuery:
    """A full-text condition: `alternatives` are ORed, and each is a tuple of phrases
    (lists of plain tokens) that must all occur in `field`."""

    field: Field
    alternatives: tuple[tuple[tuple[str, ...], ...], ...]


@dataclass(frozen=True)
class Hit:
    resource_type: str
    id: str
    score: float  # higher is more relevant; comparable only within one query


@dataclass(frozen=True)
class Change:
    """One resource as an index should now hold it: `resource` is the stored version
    (meta.versionId = `version`), or None when that version is a delete. An index keeps
    the highest version it was given, so applying a change twice, or an older change
    after a newer one, leaves the newer state (idempotent, at-least-once safe)."""

    resource_type: str
    id: str
    version: int
    resource: dict[str, Any] | None


class FullTextIndex(Protocol):
    """What a full-text backend offers, whatever it runs on. `tenant` keeps tenants
    apart as the resource store does.

    - `index`/`remove`: one resource, now;
    - `apply`: many changes in one round trip (the outbox indexer, `reindex`); returns
      one entry per change, None when it was applied (or a newer version already was),
      else the reason it failed (the change is retried later);
    - `query`: a full-text search on its own, ranked, best first.

    The SQLite backend also compiles a `TextQuery` into its search SQL, so `_text`
    combines with other parameters in one statement."""

    async def index(self, tenant: str, resource: dict[str, Any]) -> None: ...

    async def remove(self, tenant: str, resource_type: str, resource_id: str) -> None: ...

    async def apply(self, tenant: str, changes: Sequence[Change]) -> list[str | None]: ...

    async def query(
        self,
        tenant: str,
        text: TextQuery,
        resource_type: str | None = None,
        limit: int = 100,
    ) -> list[Hit]: ...

    async def close(self) -> None: ...


def narrative_text(resource: dict[str, Any]) -> str:
    """The human-readable text of the resource's narrative (text.div), tags removed."""
    text = resource.get("text")
    div = text.get("div") if isinstance(text, dict) else None
    if not isinstance(div, str):
        return ""
    return _SPACES.sub(" ", html.unescape(_TAG.sub(" ", div))).strip()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _SKIPPED_KEYS:
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def prepare(text: str, split: bool = True) -> str:
    """Text as the index stores it: NFC, ideographs and kana split apart (unless
    `split` is False: an index with its own CJK analysis wants them whole), capped."""
    text = text[:MAX_DOCUMENT]
    if text.isascii():  # most clinical text: nothing to normalise or split
        return text
    text = unicodedata.normalize("NFC", text)
    return _SPLIT.sub(r" \1 ", text) if split else text


def documents(resource: dict[str, Any], split: bool = True) -> Documents:
    """The narrative, and the resource's other strings: an index searches both for
    `_content`, so the narrative is not stored twice. `split`: as for `prepare`."""
    narrative = narrative_text(resource)
    parts: list[str] = []
    size = len(narrative)
    for text in _strings(resource):
        if size >= MAX_DOCUMENT:
            break
        parts.append(text)
        size += len(text) + 1
    return Documents(prepare(narrative, split), prepare("\n".join(parts), split))


_DIV_LANG = re.compile(r"""<div\b[^>]*?\b(?:xml:)?lang\s*=\s*["']([A-Za-z]{2,3})""")


def language(resource: dict[str, Any]) -> str | None:
    """The primary language subtag of the resource's text, lowercase ("de" for
    "de-CH"): Resource.language, else the `lang`/`xml:lang` of the narrative's div;
    None when neither says."""
    declared = resource.get("language")
    if isinstance(declared, str) and declared[:2].isalpha():
        return declared.split("-")[0].lower()
    text = resource.get("text")
    div = text.get("div") if isinstance(text, dict) else None
    if isinstance(div, str) and (found := _DIV_LANG.search(div[:512])):
        return found.group(1).lower()
    return None


def is_split_char(ch: str) -> bool:
    """True for the characters `prepare` splits apart (Han, kana, Hangul)."""
    return _SPLIT.fullmatch(ch) is not None


def _is_token_char(ch: str) -> bool:
    # the unicode61 tokenizer's rule: letters, numbers, marks and private use are tokens
    category = unicodedata.category(ch)
    return category[0] in "LNM" or category == "Co"


def tokens(text: str) -> list[str]:
    """The tokens of user text, in order, as plain strings (never FTS syntax)."""
    out: list[str] = []
    current: list[str] = []
    for ch in prepare(text):
        if _is_token_char(ch):
            current.append(ch)
        elif current:
            out.append("".join(current))
            current = []
    if current:
        out.append("".join(current))
    return out


def phrases(value: str) -> tuple[tuple[str, ...], ...]:
    """The phrases of one search value: each whitespace-separated word is a phrase of
    its tokens ("e-mail" -> ("e", "mail"), "王芳" -> ("王", "芳")); words without any
    letter or digit are dropped. Raises ValueError for more than MAX_QUERY_WORDS."""
    found = tuple(phrase for word in value.split() if (phrase := tuple(tokens(word))))
    if sum(len(p) for p in found) > MAX_QUERY_WORDS:
        raise ValueError(f"at most {MAX_QUERY_WORDS} words")
    return found


def text_query(field: Field, values: Sequence[str]) -> TextQuery:
    """The query for the comma-separated alternatives `values` (already unescaped).
    An alternative with no word matches nothing."""
    return TextQuery(field, tuple(phrases(value) for value in values))


__all__ = [
    "FIELD_OF_PARAMETER",
    "Change",
    "Documents",
    "FullTextIndex",
    "Hit",
    "TextQuery",
    "documents",
    "is_split_char",
    "language",
    "narrative_text",
    "phrases",
    "text_query",
    "tokens",
]
