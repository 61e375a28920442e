"""Write conflicts and other transient transaction failures on the MongoDB store
(review-mongo #6 and #7), over mongomock behind tests/mongo_async.py (no MongoDB server
can run here).

- The codes a server labels TransientTransactionError are told apart: only a write
  conflict (112) is a 409, the one a unit of work re-runs by itself
  (fhir_server/storage/retry.py); the transaction lifetime limit (290) is a 413 and an
  unknown transaction (251) a 503, each saying what happened.
- REST writes, transaction Bundles and batch entries re-run their transaction on a
  write conflict, so the client sees a 409 only when it persists.
- Conditional create (R4 http.html#ccreate) under concurrency: with the facade's
  `one_snapshot` mode (a transaction reads every collection as of its first operation,
  as MongoDB's snapshot read concern does), a Bundle whose ifNoneExist claim waits for
  another request with the same criteria has a snapshot from before that request's
  commit; its re-run finds the resource created meanwhile (200) instead of a 409.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from mongo_async import AsyncMockClient
from pymongo.errors import OperationFailure

from fhir_server import operations
from fhir_server.app import create_app
from fhir_server.bundles import process_bundle
from fhir_server.storage import retry
from fhir_server.storage.base import Context
from fhir_server.storage.mongodb import MongoStore
from fhir_server.storage.mongodb_errors import as_fhir_error
from fhir_server.storage.retry import RetryableConflict, rerun_on_conflict

pytestmark = pytest.mark.anyio

SYSTEM = "urn:oid:1.2.36.146.595.217.0.1"
CRITERIA = f"identifier={SYSTEM}|12345"
PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": SYSTEM, "value": "12345"}],
    "name": [{"family": "Chalmers", "given": ["Peter"]}],
}


def _transient(code: int, message: str) -> OperationFailure:
    return OperationFailure(
        message, code, {"code": code, "errmsg": message,
                        "errorLabels": ["TransientTransactionError"]},
    )  # fmt: skip


# -- telling transient transaction errors apart ----------------------------------------


def test_a_write_conflict_is_a_409_that_may_be_rerun() -> None:
    error = as_fhir_error(_transient(112, "WriteConflict error"))
    assert isinstance(error, RetryableConflict)
    assert error.status == 409
    assert error.issues[0].code == "conflict"


def test_the_transaction_lifetime_limit_is_a_413_not_a_conflict() -> None:
    error = as_fhir_error(_transient(290, "TransactionExceededLifetimeLimitSeconds"))
    assert not isinstance(error, RetryableConflict)
    assert error.status == 413
    assert "60 s" in str(error) and "split the Bundle" in str(error)


def test_an_aborted_transaction_is_a_503_saying_why() -> None:
    error = as_fhir_error(_transient(251, "Transaction 7 has been aborted"))
    assert not isinstance(error, RetryableConflict)
    assert error.status == 503
    assert "longer than MongoDB allows" in str(error)


def test_other_transient_aborts_are_503() -> None:
    error = as_fhir_error(_transient(13388, "StaleConfig"))  # a chunk migration
    assert (error.status, isinstance(error, RetryableConflict)) == (503, False)


# -- the re-run helper -------------------------------------------------------------------


async def test_rerun_returns_once_the_conflict_is_gone() -> None:
    calls = 0

    async def unit() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RetryableConflict.of("conflict")
        return "done"

    assert await rerun_on_conflict(unit) == "done"
    assert calls == 3


async def test_rerun_is_bounded_and_other_errors_are_not_rerun() -> None:
    calls = 0

    async def conflicting() -> None:
        nonlocal calls
        calls += 1
        raise RetryableConflict.of("conflict")

    with pytest.raises(RetryableConflict):
        await rerun_on_conflict(conflicting)
    assert calls == retry.ATTEMPTS

    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("not a conflict")

    with pytest.raises(ValueError):
        await rerun_on_conflict(failing)
    assert calls == 1


# -- over the store ----------------------------------------------------------------------


@pytest.fixture
async def store() -> AsyncIterator[MongoStore]:
    opened = await MongoStore.open(
        "mongodb://mongomock/", client=AsyncMockClient(one_snapshot=True)
    )
    try:
        yield opened
    finally:
        await opened.close()


def _client(store: MongoStore) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(store))
    return httpx.AsyncClient(transport=transport, base_url="http://fhir.test/fhir/")


async def _patients(store: MongoStore) -> int:
    return (await store.history(Context(), "Patient"))[1]


async def test_a_rest_update_reruns_after_losing_a_write_conflict(store: MongoStore) -> None:
    """A PUT meets a transaction holding the same resource: its first attempt is a
    WriteConflict; the re-run after the holder commits updates the holder's version."""
    ctx = Context()
    async with store.transaction(ctx) as txn:
        await txn.update({**PATIENT, "id": "p1"}, None)
    holding = asyncio.Event()

    async def holder() -> None:
        async with store.transaction(ctx) as txn:
            await txn.update({**PATIENT, "id": "p1", "active": True}, None)
            holding.set()
            await asyncio.sleep(0.05)

    async with _client(store) as client:
        task = asyncio.create_task(holder())
        await holding.wait()
        response = await client.put("Patient/p1", json={**PATIENT, "id": "p1", "gender": "male"})
        await task
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["versionId"] == "3"  # after the holder's version 2


async def test_a_waiting_bundle_claim_reruns_and_finds_the_created_resource(
    store: MongoStore,
) -> None:
    """A transaction Bundle whose second ifNoneExist entry waits for a concurrent
    conditional create with the same criteria: its snapshot was taken at the first
    entry's claim, before the other commit; the re-run finds that resource (200)."""
    ctx = Context()
    holding = asyncio.Event()
    created: list[str] = []

    async def holder() -> None:
        async with store.transaction(ctx) as txn:
            result = await operations.create(txn, PATIENT, "Patient", if_none_exist=CRITERIA)
            created.append(result.stored.id)
            holding.set()
            await asyncio.sleep(0.1)  # the Bundle waits on the lease meanwhile

    practitioner = {"resourceType": "Practitioner",
                    "identifier": [{"system": SYSTEM, "value": "dr-1"}]}  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "resource": practitioner,
         "request": {"method": "POST", "url": "Practitioner",
                     "ifNoneExist": f"identifier={SYSTEM}|dr-1"}},
        {"fullUrl": "urn:uuid:7c1d4f52-7b3e-4c1e-9a56-0e0b4bd2d7b1", "resource": PATIENT,
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": CRITERIA}},
    ]}  # fmt: skip
    counting = _Counting(store)
    task = asyncio.create_task(holder())
    await holding.wait()
    response = await process_bundle(counting, ctx, bundle)  # type: ignore[arg-type]
    await task
    statuses = [entry["response"]["status"] for entry in response["entry"]]
    assert statuses == ["201 Created", "200 OK"]
    assert response["entry"][1]["response"]["location"].startswith(f"Patient/{created[0]}/")
    assert await _patients(store) == 1
    # the Bundle claims its criteria before its first read or write (bundles._claim_first),
    # so its one snapshot already holds the other commit: no re-run was needed
    assert counting.transactions == 1


async def test_a_claim_after_the_snapshot_reruns_and_finds_the_created_resource(
    store: MongoStore,
) -> None:
    """A unit of work that reads before its conditional create (its snapshot fixed
    before the lease wait) cannot see the resource the lease holder committed: it
    creates, its claim document conflicts, and `in_transaction` re-runs it; the re-run
    finds that resource (200), where a real server would otherwise answer 409."""
    ctx = Context()
    holding = asyncio.Event()
    created: list[str] = []

    async def holder() -> None:
        async with store.transaction(ctx) as txn:
            result = await operations.create(txn, PATIENT, "Patient", if_none_exist=CRITERIA)
            created.append(result.stored.id)
            holding.set()
            await asyncio.sleep(0.05)

    attempts = 0

    async def work(txn: Any) -> operations.OperationResult:
        nonlocal attempts
        attempts += 1
        await txn.read("Practitioner", "nobody")  # the snapshot starts here
        return await operations.create(txn, PATIENT, "Patient", if_none_exist=CRITERIA)

    task = asyncio.create_task(holder())
    await holding.wait()
    result = await operations.in_transaction(store, ctx, work)
    await task
    assert (result.status, result.stored.id) == (200, created[0])
    assert attempts == 2
    assert await _patients(store) == 1


async def test_a_bundle_reruns_after_losing_a_write_conflict(store: MongoStore) -> None:
    ctx = Context()
    async with store.transaction(ctx) as txn:
        await txn.update({**PATIENT, "id": "p1"}, None)
    holding = asyncio.Event()

    async def holder() -> None:
        async with store.transaction(ctx) as txn:
            await txn.update({**PATIENT, "id": "p1", "active": True}, None)
            holding.set()
            await asyncio.sleep(0.05)

    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**PATIENT, "id": "p1", "gender": "male"},
         "request": {"method": "PUT", "url": "Patient/p1"}},
    ]}  # fmt: skip
    task = asyncio.create_task(holder())
    await holding.wait()
    response = await process_bundle(store, ctx, bundle)
    await task
    entry = response["entry"][0]["response"]
    assert (entry["status"], entry["location"]) == ("200 OK", "Patient/p1/_history/3")


class _Counting:
    """`store`, counting the transactions opened."""

    def __init__(self, store: MongoStore) -> None:
        self._store = store
        self.transactions = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @asynccontextmanager
    async def transaction(self, ctx: Context) -> AsyncIterator[Any]:
        self.transactions += 1
        async with self._store.transaction(ctx) as txn:
            yield txn


class _Interleaving:
    """`store`, whose transactions let other tasks run before each step (the facade
    itself never suspends, so 50 "parallel" requests would otherwise run one by one)."""

    def __init__(self, store: MongoStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @asynccontextmanager
    async def transaction(self, ctx: Context) -> AsyncIterator[Any]:
        async with self._store.transaction(ctx) as txn:
            yield _InterleavingTransaction(txn)


class _InterleavingTransaction:
    def __init__(self, txn: Any) -> None:
        self._txn = txn

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._txn, name)
        if not callable(found):
            return found

        async def step(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            return await found(*args, **kwargs)

        return step


def _bundle(n: int) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Practitioner",
                      "identifier": [{"system": SYSTEM, "value": f"dr-{n}"}]},
         "request": {"method": "POST", "url": "Practitioner",
                     "ifNoneExist": f"identifier={SYSTEM}|dr-{n}"}},
        {"resource": PATIENT,
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": CRITERIA}},
    ]}  # fmt: skip


async def test_fifty_parallel_bundles_with_the_same_conditional_create_get_no_409(
    store: MongoStore,
) -> None:
    """The issue's 50 parallel conditional creates, each the second entry of a
    transaction Bundle (the case where the claim comes after the snapshot, and where a
    Bundle holding a lease gives way to an older one): one Patient, 49 entries answer
    200 with it, none a 409 or 503."""
    interleaving: Any = _Interleaving(store)
    results = await asyncio.gather(
        *(process_bundle(interleaving, Context(), _bundle(n)) for n in range(50)),
        return_exceptions=True,
    )
    failures = [str(r) for r in results if isinstance(r, BaseException)]
    assert failures == []
    statuses = sorted(r["entry"][1]["response"]["status"] for r in results)  # type: ignore[index]
    assert statuses == ["200 OK"] * 49 + ["201 Created"]
    locations = {r["entry"][1]["response"]["location"].split("/")[1]  # type: ignore[index]
                 for r in results}  # fmt: skip
    assert len(locations) == 1
    assert await _patients(store) == 1


async def test_fifty_parallel_rest_conditional_creates_with_one_snapshot(
    store: MongoStore,
) -> None:
    """The same over REST POST with If-None-Exist, where the claim is the transaction's
    first operation: 49 × 200 and one 201, one Patient."""

    async def post(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("Patient", json=PATIENT, headers={"If-None-Exist": CRITERIA})

    async with _client(store) as client:
        responses: list[Any] = await asyncio.gather(*(post(client) for _ in range(50)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 49 + [201], [r.text for r in responses if r.status_code >= 300]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await _patients(store) == 1
