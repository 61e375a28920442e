"""The mongomock facade (tests/mongo_async.py) itself: the transaction semantics the
MongoDB store's tests rely on in CI, checked on the facade's own API. A real server
answers these the same way (MongoDB's snapshot isolation, first writer wins); they
are what the facade promises, not the product."""

from __future__ import annotations

from typing import Any

import pytest
from mongo_async import AsyncMockClient, MockSession
from pymongo.errors import DuplicateKeyError, OperationFailure, ServerSelectionTimeoutError

pytestmark = pytest.mark.anyio


async def _collection(client: AsyncMockClient, unique: bool = True) -> Any:
    people = client["db"]["people"]
    if unique:
        await people.create_index([("tenant", 1), ("id", 1)], unique=True, name="by_id")
    return people


async def _open(client: AsyncMockClient) -> MockSession:
    session = client.start_session()
    await session.start_transaction()
    return session


def _is_write_conflict(exc: OperationFailure) -> bool:
    return exc.code == 112 and exc.has_error_label("TransientTransactionError")


async def test_writes_are_seen_by_their_transaction_only_until_commit() -> None:
    client = AsyncMockClient()
    people = await _collection(client)
    await people.insert_one({"_id": 1, "tenant": "t", "id": "a", "n": 0})
    session = await _open(client)
    await people.insert_one({"_id": 2, "tenant": "t", "id": "b"}, session=session)
    await people.update_one({"_id": 1}, {"$set": {"n": 1}}, session=session)
    await people.delete_one({"_id": 1}, session=session)
    # the transaction sees its own writes, in reads, counts and aggregations
    assert await people.find_one({"_id": 1}, session=session) is None
    assert await people.count_documents({}, session=session) == 1
    rows = await (await people.aggregate([{"$match": {}}], session=session)).to_list()
    assert [row["_id"] for row in rows] == [2]
    # others (a plain read, another session) see the last commit
    assert (await people.find_one({"_id": 1}))["n"] == 0
    assert await people.count_documents({}) == 1
    other = client.start_session()
    assert [d["_id"] for d in await people.find({}, session=other).to_list()] == [1]
    await session.commit_transaction()
    assert [d["_id"] for d in await people.find({}).to_list()] == [2]
    assert client.locks == {}


async def test_abort_discards_and_a_plain_write_meanwhile_is_kept() -> None:
    client = AsyncMockClient()
    people = await _collection(client)
    session = await _open(client)
    await people.insert_one({"_id": 1, "tenant": "t", "id": "a"}, session=session)
    await people.insert_one({"_id": 9, "tenant": "t", "id": "z"})  # plain, committed at once
    await session.abort_transaction()
    assert [d["_id"] for d in await people.find({}).to_list()] == [9]
    assert not session.in_transaction


async def test_the_first_writer_wins_and_a_later_snapshot_sees_the_commit() -> None:
    client = AsyncMockClient()
    people = await _collection(client)
    await people.insert_one({"_id": 1, "tenant": "t", "id": "a", "n": 0})
    first, second = await _open(client), await _open(client)
    await people.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=first)
    with pytest.raises(OperationFailure) as locked:
        await people.update_one({"_id": 1}, {"$inc": {"n": 10}}, session=second)
    assert _is_write_conflict(locked.value)
    with pytest.raises(OperationFailure) as plain:
        await people.update_one({"_id": 1}, {"$inc": {"n": 100}})
    assert _is_write_conflict(plain.value)
    await second.abort_transaction()
    await first.commit_transaction()
    third = await _open(client)
    await people.update_one({"_id": 1}, {"$inc": {"n": 10}}, session=third)
    await third.commit_transaction()
    assert (await people.find_one({"_id": 1}))["n"] == 11


async def test_a_document_changed_after_the_copy_is_a_write_conflict() -> None:
    """Snapshot isolation: a transaction may not overwrite a change it could not see."""
    client = AsyncMockClient()
    people = await _collection(client)
    await people.insert_many([{"_id": 1, "tenant": "t", "id": "a", "n": 0},
                              {"_id": 2, "tenant": "t", "id": "b", "n": 0}])
    session = await _open(client)
    await people.update_one({"_id": 2}, {"$inc": {"n": 1}}, session=session)  # copy taken
    await people.update_one({"_id": 1}, {"$set": {"n": 5}})  # committed after the copy
    assert (await people.find_one({"_id": 1}, session=session))["n"] == 0  # its snapshot
    with pytest.raises(OperationFailure) as caught:
        await people.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)
    assert _is_write_conflict(caught.value)
    await session.abort_transaction()
    assert [d["n"] for d in await people.find({}, sort=[("_id", 1)]).to_list()] == [5, 0]


async def test_unique_keys_inside_and_across_transactions() -> None:
    client = AsyncMockClient()
    people = await _collection(client)
    await people.insert_one({"_id": 1, "tenant": "t", "id": "a"})
    first, second = await _open(client), await _open(client)
    # a duplicate of a committed key: DuplicateKeyError at the write, as in MongoDB
    with pytest.raises(DuplicateKeyError):
        await people.insert_one({"_id": 2, "tenant": "t", "id": "a"}, session=first)
    await first.abort_transaction()
    first = await _open(client)
    # the same new key in two open transactions: the second writer conflicts
    await people.insert_one({"_id": 3, "tenant": "t", "id": "new"}, session=first)
    with pytest.raises(OperationFailure) as caught:
        await people.insert_one({"_id": 4, "tenant": "t", "id": "new"}, session=second)
    assert _is_write_conflict(caught.value)
    await second.abort_transaction()
    await first.commit_transaction()
    # a key committed after the copy was taken: a conflict, not a silent duplicate
    third = await _open(client)
    await people.insert_one({"_id": 5, "tenant": "t", "id": "c"}, session=third)
    await people.insert_one({"_id": 6, "tenant": "t", "id": "d"})
    with pytest.raises(OperationFailure) as late:
        await people.insert_one({"_id": 7, "tenant": "t", "id": "d"}, session=third)
    assert _is_write_conflict(late.value)
    await third.abort_transaction()
    assert sorted(d["id"] for d in await people.find({}).to_list()) == ["a", "d", "new"]


async def test_a_key_freed_and_taken_again_in_one_transaction_commits() -> None:
    client = AsyncMockClient()
    people = await _collection(client)
    await people.insert_one({"_id": 1, "tenant": "t", "id": "a"})
    session = await _open(client)
    await people.delete_one({"_id": 1}, session=session)
    await people.insert_one({"_id": 2, "tenant": "t", "id": "a"}, session=session)
    await session.commit_transaction()
    assert [d["_id"] for d in await people.find({"id": "a"}).to_list()] == [2]


async def test_a_commit_refused_by_a_unique_key_publishes_nothing() -> None:
    """A plain write takes a key the transaction holds (the facade does not make plain
    writes check key holders): the commit fails whole and undoes what it applied."""
    client = AsyncMockClient()
    people = await _collection(client)
    await people.insert_one({"_id": 1, "tenant": "t", "id": "a", "n": 0})
    session = await _open(client)
    await people.update_one({"_id": 1}, {"$set": {"n": 1}}, session=session)
    await people.insert_one({"_id": 2, "tenant": "t", "id": "b"}, session=session)
    await people.insert_one({"_id": 3, "tenant": "t", "id": "b"})
    with pytest.raises(OperationFailure) as caught:
        await session.commit_transaction()
    assert _is_write_conflict(caught.value)
    assert not session.in_transaction
    assert sorted((d["_id"], d.get("n")) for d in await people.find({}).to_list()) == [
        (1, 0), (3, None)]


async def test_an_outage_mid_transaction_leaves_nothing_and_an_abort_still_drops_it() -> None:
    client = AsyncMockClient()
    people = await _collection(client)
    session = await _open(client)
    client.fail_after(1)
    await people.insert_one({"_id": 1, "tenant": "t", "id": "a"}, session=session)
    with pytest.raises(ServerSelectionTimeoutError):
        await people.insert_one({"_id": 2, "tenant": "t", "id": "b"}, session=session)
    with pytest.raises(ServerSelectionTimeoutError):
        await session.commit_transaction()
    await session.end_session()  # aborts; the server is still away
    client.down = False
    assert await people.count_documents({}) == 0 and client.locks == {}
    again = await _open(client)
    await people.insert_one({"_id": 1, "tenant": "t", "id": "a"}, session=again)
    await again.commit_transaction()
    assert await people.count_documents({}) == 1
