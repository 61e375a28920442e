"""Choosing a display by language: displayLanguage, or an Accept-Language header."""

from __future__ import annotations

import re

from terminology.model import Designation


def pick_display(
    display: str | None, designations: tuple[Designation, ...], language: str | None
) -> str | None:
    """The display in `language` (an Accept-Language-like list, e.g. "zh-CN,zh;q=0.9,en"):
    the first designation whose language matches a wanted tag or its primary subtag;
    else `display`."""
    if not language or not designations:
        return display
    for wanted in _languages(language):
        if wanted == "*":
            return display
        for d in designations:
            lang = (d.language or "").lower()
            if lang and (lang == wanted or lang.split("-")[0] == wanted.split("-")[0] == wanted):
                return d.value
        for d in designations:
            lang = _script_tag((d.language or "").lower())
            if lang and lang.split("-")[0] == wanted.split("-")[0] and (
                "-" not in wanted or "-" not in lang or lang == _script_tag(wanted)
            ):  # a regional wish takes the base language, never another region's
                return d.value  # (zh-TW must not get zh-CN's simplified characters)
    return display


# Chinese regions stand for a script: zh-TW is written like zh-Hant, zh-CN like zh-Hans
_SCRIPTS = {"zh-cn": "zh-hans", "zh-sg": "zh-hans", "zh-tw": "zh-hant", "zh-hk": "zh-hant",
            "zh-mo": "zh-hant"}  # fmt: skip


def _script_tag(tag: str) -> str:
    return _SCRIPTS.get(tag, tag)


def _languages(header: str) -> list[str]:
    ranked: list[tuple[float, int, str]] = []
    for n, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        match = re.search(r"q=([0-9.]+)", params)
        if match:
            try:
                quality = float(match.group(1))
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, n, tag.lower()))
    return [tag for _, _, tag in sorted(ranked)]
