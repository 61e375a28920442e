"""Bounded evaluation of ValueSet compose filters with `op: regex`.

A client writes the pattern, so it can be catastrophic (`(.*.*)*x` backtracks
exponentially). Python's `re` cannot be interrupted, and matching on the event loop
would stop every other client (FHIR API, MLLP and DICOM listeners share the loop). So
patterns are run with the `regex` package, which takes a `timeout` and releases the GIL
while matching (`concurrent=True`), in a worker thread, under one time budget for the
whole selection: past it the request is a 422 OperationOutcome `too-costly` naming the
filter. Both concept stores (SQLite and MongoDB) filter rows in Python through
`select_rows`, so the bound holds for `$expand`, `$validate-code` and `code:in` alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import regex

from terminology.store import Filter, TerminologyError

# Wall-clock budget for all regex matching of one selection. Real patterns over the
# largest shipped system (ICD-10-CM, ~74,000 displays) take well under a second.
REGEX_BUDGET_SECONDS = 2.0

WHERE = "ValueSet.compose.include.filter"

Row = tuple[Any, ...]


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """The compiled pattern; 400 naming it when it is not a valid regular expression."""
    try:
        return regex.compile(pattern)
    except (regex.error, ValueError, OverflowError):
        raise TerminologyError(400, "invalid", f"Bad regex in filter: {pattern!r}",
                               WHERE) from None  # fmt: skip


def fullmatch_any(f: Filter, texts: Sequence[str], deadline: float | None) -> bool:
    """True when the filter's pattern matches one of `texts` whole, within the deadline
    (time.monotonic()); 422 too-costly when the deadline passes."""
    pattern = compile_pattern(f.value)
    for text in texts:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise _too_costly(f)
        try:
            if pattern.fullmatch(text, timeout=left, concurrent=True):
                return True
        except TimeoutError:
            raise _too_costly(f) from None
    return False


async def select_rows(
    rows: Sequence[Row], filters: Sequence[Filter], keep: Callable[[Row, float | None], bool]
) -> list[int]:
    """The first column of the rows `keep(row, deadline)` accepts. Without a regex filter
    this runs inline (cheap comparisons); with one it runs in a worker thread under
    REGEX_BUDGET_SECONDS, so the event loop keeps serving other clients meanwhile."""
    regexes = [f for f in filters if f.op == "regex"]
    if not regexes:
        return [row[0] for row in rows if keep(row, None)]
    for f in regexes:  # a bad pattern is a 400 before any work
        compile_pattern(f.value)
    deadline = time.monotonic() + REGEX_BUDGET_SECONDS
    return await asyncio.to_thread(lambda: [row[0] for row in rows if keep(row, deadline)])


def _too_costly(f: Filter) -> TerminologyError:
    return TerminologyError(
        422, "too-costly",
        f"Filter '{f.property}' regex {f.value!r} took longer than {REGEX_BUDGET_SECONDS:g} s "
        "over the code system's concepts (nested repetition such as '(.*)*' backtracks "
        "without end); use a simpler pattern", WHERE,
    )  # fmt: skip
