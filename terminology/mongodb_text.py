"""Type-ahead text on MongoDB: the folded token arrays kept in each concept document, the
candidate query over them, and the ranking done in Python (terminology.mongodb_expansions).

The tokens are those SQLite's FTS5 index makes of the same text (terminology.sqlite_store
`search_text`: display and designations; ideographs, kana and Hangul one per character),
folded as its unicode61 tokenizer with remove_diacritics 2 folds them: lower case, and
Latin letters without their diacritics ("Café" -> "cafe").

A filter is its whitespace-separated words, each a phrase of tokens ("e-mail" -> e, mail;
"血糖" -> 血, 糖): every phrase must occur in the tokens, its last token as a prefix. The
candidate query asks the multikey index for each token (equality, or a prefix-anchored
regex for a phrase's last token, which the index serves as a range); the order of the
tokens and the ranks are checked here, on the candidates only.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from fhir_server.storage.mongodb_query import regex_literal
from search.fulltext import phrases, tokens
from terminology.model import Concept
from terminology.sqlite_expansions import looks_like_code  # one token with a digit: E11.2
from terminology.sqlite_store import search_text
from terminology.store import TerminologyError

Phrase = tuple[str, ...]

PHRASE, NEAR, WORDS, PREFIX = 0, 1, 2, 3  # the ranks, best first (sqlite_expansions.TextQuery)


def _fold_char(ch: str) -> str:
    if ch.isascii():
        return ch
    base = unicodedata.normalize("NFD", ch)
    # a Latin letter with diacritics becomes the letter (other scripts keep their marks)
    if len(base) > 1 and ord(base[0]) < 0x250 and all(
        unicodedata.category(m) == "Mn" for m in base[1:]
    ):
        return base[0]
    return ch


def fold(token: str) -> str:
    return "".join(_fold_char(ch) for ch in token.lower())


def _folded(items: list[str]) -> list[str]:
    return [f for f in (fold(t) for t in items) if f]


def concept_tokens(concept: Concept) -> list[str]:
    """The words a filter matches, in order: display and designations."""
    return _folded(tokens(search_text(concept)))


def code_tokens(code: str) -> list[str]:
    return _folded(tokens(code))


@dataclass(frozen=True)
class TextFilter:
    phrases: tuple[Phrase, ...]
    codes_too: bool

    def query(self) -> dict[str, Any]:
        """The candidate filter: each token in the token array (a phrase's last one as a
        prefix); ordering and ranks are checked by `rank`."""
        text = {"$and": _conditions("words", self.phrases)}
        if not self.codes_too:
            return text
        return {"$or": [text, {"$and": _conditions("ctoks", self.phrases)}]}

    def rank(self, words: list[str], ctoks: list[str]) -> int | None:
        """PHRASE, NEAR, WORDS or PREFIX for a concept with these tokens; None if it does
        not match."""
        if not all(_occurs(words, p, prefix=True) for p in self.phrases):
            if self.codes_too and all(_occurs(ctoks, p, prefix=True) for p in self.phrases):
                return PREFIX
            return None
        flat = tuple(t for p in self.phrases for t in p)
        if _occurs(words, flat, prefix=False):
            return PHRASE
        if not all(_occurs(words, p, prefix=False) for p in self.phrases):
            return PREFIX
        # FTS5 NEAR(p1 p2 ..., n-1): one extra token allowed per extra word
        return NEAR if _near(words, self.phrases, len(self.phrases) - 1) else WORDS


def text_filter(text: str) -> TextFilter | None:
    """The filter of type-ahead `text`; None when it has no letter or digit."""
    try:
        found = phrases(text)
    except ValueError as exc:
        raise TerminologyError(400, "too-costly", f"filter: {exc}", "filter") from None
    folded = tuple(p for p in (tuple(_folded(list(phrase))) for phrase in found) if p)
    if not folded:
        return None
    return TextFilter(folded, looks_like_code(text))


def _conditions(field: str, found: tuple[Phrase, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for phrase in found:
        out.extend({field: token} for token in phrase[:-1])
        # regex_literal: NUL and other control characters as \xHH, which a MongoDB
        # pattern needs (it refuses an embedded NUL byte)
        out.append({field: {"$regex": "^" + regex_literal(phrase[-1])}})
    return out


def _starts(seq: list[str], phrase: Phrase, prefix: bool) -> list[int]:
    n = len(phrase)
    head, last = phrase[:-1], phrase[-1]
    if n == 1:  # most words: no slices to compare
        if prefix:
            return [i for i, token in enumerate(seq) if token.startswith(last)]
        return [i for i, token in enumerate(seq) if token == last]
    return [
        i for i in range(len(seq) - n + 1)
        if tuple(seq[i:i + n - 1]) == head
        and (seq[i + n - 1].startswith(last) if prefix else seq[i + n - 1] == last)
    ]  # fmt: skip


def _occurs(seq: list[str], phrase: Phrase, prefix: bool) -> bool:
    if len(phrase) == 1:
        last = phrase[0]
        return any(t.startswith(last) for t in seq) if prefix else last in seq
    return bool(_starts(seq, phrase, prefix))


def _near(seq: list[str], found: tuple[Phrase, ...], gap: int) -> bool:
    """An instance of each phrase such that at most `gap` tokens lie between the end of
    the first one and the start of the last one."""
    starts = [_starts(seq, p, prefix=False) for p in found]
    for first, phrase in enumerate(found):
        for s0 in starts[first]:
            last = s0
            for other, positions in enumerate(starts):
                if other == first:
                    continue
                later = [s for s in positions if s >= s0]
                if not later:
                    break
                last = max(last, min(later))
            else:
                if last - (s0 + len(phrase)) <= gap:
                    return True
    return False
