"""Leases on conditional-create criteria for the MongoDB store (mongodb.py,
`MongoTransaction.claim`).

A lease is a document in claim_leases whose unique _id is the tenant, type and
normalised criteria; it is taken outside the transaction, before the transaction
reads anything, and released when the transaction ends, so a second request with
the same criteria starts its snapshot after the first one committed. A lease left
by a crashed worker is taken over after LEASE_SECONDS.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from fhir_server.errors import FHIRError
from fhir_server.storage import mongodb_documents as docs
from fhir_server.storage.retry import RetryableConflict

# a lease outlives any sane transaction; one left by a crashed worker is taken over after it
LEASE_SECONDS = 30.0
# how long a conditional create waits for another one on the same criteria
LEASE_WAIT_SECONDS = 20.0


async def acquire(db: Any, key: str, age: str, held: list[tuple[str, str]]) -> str:
    """Wait for the lease on `key`. Leases taken in key order (a Bundle claims its
    criteria sorted, fhir_server/bundles.py) just wait: no cycle of waits can form.
    Out of order, `age` orders transactions (older first); one that already holds a
    greater key gives way at once to an older holder (wait-die), so two
    Bundles claiming the same criteria in opposite orders cannot wait on each other:
    the younger one's transaction is aborted and re-run (storage.retry), a 503 once the
    re-runs are exhausted."""
    leases = db[docs.CLAIM_LEASES]
    token = uuid.uuid4().hex
    deadline = time.monotonic() + LEASE_WAIT_SECONDS
    delay = 0.002
    while True:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        until = now + timedelta(seconds=LEASE_SECONDS)
        lease = {"holder": token, "until": until, "age": age}
        try:
            await leases.insert_one({"_id": key, **lease})
            return token
        except DuplicateKeyError:
            taken = await leases.find_one_and_update(
                {"_id": key, "until": {"$lt": now}}, {"$set": lease}
            )
            if taken is not None:
                return token
        if any(held_key > key for held_key, _ in held):  # claimed out of key order
            current = await leases.find_one({"_id": key}, {"age": 1})
            if current is not None and current.get("age", "") < age:
                # it dies: it lets go of its leases (its transaction is aborted), waits
                # until the older holder is done, and its whole unit of work is re-run
                # in a new transaction, with a snapshot after that commit (storage.retry)
                for held_key, held_token in held:
                    await release(db, held_key, held_token)
                held.clear()
                await _wait_until_free(leases, key, deadline)
                raise _gives_way()
        if time.monotonic() > deadline:
            raise _busy()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def _wait_until_free(leases: Any, key: str, deadline: float) -> None:
    delay = 0.002
    while True:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        if await leases.find_one({"_id": key, "until": {"$gte": now}}, {"_id": 1}) is None:
            return
        if time.monotonic() > deadline:
            raise _busy()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def release(db: Any, key: str, token: str) -> None:
    try:
        await db[docs.CLAIM_LEASES].delete_one({"_id": key, "holder": token})
    except PyMongoError:
        pass  # it expires after LEASE_SECONDS


def _gives_way() -> RetryableConflict:
    return RetryableConflict.of(
        "Another request with the same conditional-create criteria is still running; "
        "retry later",
        status=503, code="transient",
    )


def _busy() -> FHIRError:
    return FHIRError.simple(
        503, "transient",
        "Another request with the same conditional-create criteria is still running; "
        "retry later",
    )
