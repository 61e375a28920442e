"""Re-running a unit of work whose transaction lost a write conflict.

A store raises `RetryableConflict` (a 409) when its transaction was aborted because a
concurrent transaction wrote the same document first (MongoDB's WriteConflict, code
112) and nothing of it was written. Such a transaction can be re-run as a whole: a new
transaction reads a new snapshot, which includes the write that won. `rerun_on_conflict`
does that a bounded number of times, so a client sees the 409 only when the conflicts
persist. Only a caller that owns the whole transaction may re-run it (a REST write, a
transaction Bundle, one batch entry, one ingested message): the unit must build every
input of the transaction again from the request, since a failed attempt may have
changed what it planned.

The backends share it: SQLite serialises writers (BEGIN IMMEDIATE with a busy timeout),
so it never raises a RetryableConflict and the helper just runs the unit once there.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

from fhir_server.errors import FHIRError, Issue

log = logging.getLogger(__name__)

T = TypeVar("T")

# attempts in all (the first run and the re-runs), and the pause before a re-run: a
# random part of a window that doubles per attempt, so contenders do not collide again
ATTEMPTS = 6
FIRST_PAUSE_SECONDS = 0.01
MAX_PAUSE_SECONDS = 0.5


class RetryableConflict(FHIRError):
    """The transaction lost to a concurrent one and wrote nothing; re-running the whole
    unit of work in a new transaction may succeed. A 409 (a write conflict), or a 503
    (a conditional-create claim that gave way to an older transaction)."""

    @classmethod
    def of(
        cls, diagnostics: str, status: int = 409, code: str = "conflict"
    ) -> RetryableConflict:
        return cls(status, [Issue(code, diagnostics)])


async def rerun_on_conflict(
    unit: Callable[[], Awaitable[T]], attempts: int = ATTEMPTS
) -> T:
    """`await unit()`, again after a short random pause while it raises
    RetryableConflict, at most `attempts` times in all; then that 409 goes to the client."""
    token = _AGE.set(new_age()) if _AGE.get() is None else None
    try:
        window = FIRST_PAUSE_SECONDS
        for attempt in range(1, attempts + 1):
            try:
                return await unit()
            except RetryableConflict:
                if attempt == attempts:
                    log.info("a write conflict persisted over %d attempts", attempts)
                    raise
            await asyncio.sleep(random.uniform(0, window))  # noqa: S311 - jitter
            window = min(window * 2, MAX_PAUSE_SECONDS)
        raise AssertionError("unreachable")  # the loop returns or raises
    finally:
        if token is not None:
            _AGE.reset(token)


# The age of the unit of work being run (its first start, kept over its re-runs): a
# store that orders transactions by age (MongoDB's conditional-create leases,
# wait-die) gives a re-run its first attempt's age, so it grows older and wins in the end
_AGE: ContextVar[str | None] = ContextVar("unit_of_work_age", default=None)


def new_age() -> str:
    """An age: the start time, then a random tie-break (later compares greater)."""
    return f"{time.time():017.6f}-{uuid.uuid4().hex[:8]}"


def unit_age() -> str:
    """The age of the unit of work `rerun_on_conflict` runs, or a new one outside it."""
    return _AGE.get() or new_age()
