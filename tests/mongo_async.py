"""A thin async facade over mongomock with the part of the `pymongo.AsyncMongoClient`
API that the MongoDB store uses, for CI machines where no MongoDB server can run.

mongomock is synchronous and has no sessions or transactions. What this facade
emulates, and how far that goes:

- Transactions: a session in a transaction applies each write at once and keeps
  an undo journal (the document before its first change); `abort_transaction`
  puts those documents back. A document written by an open transaction is
  write-locked: another transaction (or a plain write) touching it fails with
  WriteConflict (code 112, label TransientTransactionError), as in MongoDB, where
  the first writer wins.
- Not emulated: isolation. Other sessions READ a transaction's writes before it
  commits (MongoDB's snapshot isolation hides them), and a transaction does not
  conflict on documents changed after its snapshot unless they are still locked.
  Tests that need those go to a real server (FHIR_FUSION_TEST_MONGODB).
- Outages: `client.down = True` makes every call fail with
  ServerSelectionTimeoutError, as an unreachable server does; `fail_after(n)` lets
  n more calls through first (the database going away mid-request). An abort
  while down still undoes the journal: a real server discards an abandoned
  transaction by itself.
- `admin.command("hello")` answers as a replica-set member, or as a standalone
  server with `replica_set=False`.

Product code never imports this module: it is in tests/ only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import mongomock
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

LockKey = tuple[str, str, Any]


class AsyncMockClient:
    def __init__(self, *, replica_set: bool = True) -> None:
        self.sync = mongomock.MongoClient()
        self.replica_set = replica_set
        self.down = False
        self._calls_left: int | None = None
        self.locks: dict[LockKey, MockSession] = {}
        self.writes = 0  # documents written, for tests that fail a request part-way
        self.admin = _Admin(self)

    def fail_after(self, calls: int) -> None:
        """Let `calls` more database calls through, then behave as if the server went away."""
        self._calls_left = calls

    def check(self) -> None:
        if self._calls_left is not None:
            if self._calls_left <= 0:
                self.down = True
                self._calls_left = None
            else:
                self._calls_left -= 1
        if self.down:
            raise ServerSelectionTimeoutError(
                "127.0.0.1:1: [Errno 111] Connection refused (emulated outage)"
            )

    def __getitem__(self, name: str) -> AsyncMockDatabase:
        return AsyncMockDatabase(self, name)

    def get_database(self, name: str) -> AsyncMockDatabase:
        return self[name]

    def start_session(self, **_: Any) -> MockSession:
        self.check()
        return MockSession(self)

    async def close(self) -> None:
        return None


class _Admin:
    def __init__(self, client: AsyncMockClient) -> None:
        self._client = client

    async def command(self, name: str, *_: Any, **__: Any) -> dict[str, Any]:
        self._client.check()
        if name in ("hello", "isMaster", "ismaster"):
            answer: dict[str, Any] = {"isWritablePrimary": True, "ok": 1.0}
            if self._client.replica_set:
                answer["setName"] = "mongomock-rs"
            return answer
        if name == "ping":
            return {"ok": 1.0}
        raise NotImplementedError(f"the mongomock facade does not answer {name!r}")


class MockSession:
    """A session whose transaction is emulated by write locks and an undo journal."""

    def __init__(self, client: AsyncMockClient) -> None:
        self._client = client
        self._active = False
        self._journal: list[tuple[Any, Any, dict[str, Any] | None]] = []
        self._touched: set[LockKey] = set()

    @property
    def in_transaction(self) -> bool:
        return self._active

    async def start_transaction(self, **_: Any) -> None:
        if self._active:
            raise mongomock.InvalidOperation("Transaction already in progress")
        self._client.check()
        self._active = True
        self._journal = []
        self._touched = set()

    def before_write(self, collection: Any, key: LockKey, doc_id: Any) -> None:
        if key in self._touched:
            return
        self._touched.add(key)
        self._client.locks[key] = self
        self._journal.append((collection, doc_id, collection.find_one({"_id": doc_id})))

    async def commit_transaction(self) -> None:
        self._client.check()
        self._finish()

    async def abort_transaction(self) -> None:
        for collection, doc_id, prior in reversed(self._journal):
            if prior is None:
                collection.delete_one({"_id": doc_id})
            else:
                collection.replace_one({"_id": doc_id}, prior, upsert=True)
        self._finish()
        self._client.check()

    def _finish(self) -> None:
        for key in self._touched:
            if self._client.locks.get(key) is self:
                del self._client.locks[key]
        self._journal = []
        self._touched = set()
        self._active = False

    async def end_session(self) -> None:
        if self._active:
            try:
                await self.abort_transaction()
            except ServerSelectionTimeoutError:
                pass


class AsyncMockDatabase:
    def __init__(self, client: AsyncMockClient, name: str) -> None:
        self.client = client
        self.name = name
        self.sync = client.sync[name]

    def __getitem__(self, name: str) -> AsyncMockCollection:
        return AsyncMockCollection(self, name)

    def get_collection(self, name: str) -> AsyncMockCollection:
        return self[name]

    async def list_collection_names(self) -> list[str]:
        self.client.check()
        return list(self.sync.list_collection_names())


class AsyncMockCursor:
    def __init__(self, client: AsyncMockClient, cursor: Any) -> None:
        self._client = client
        self._cursor = cursor

    def sort(self, *args: Any, **kwargs: Any) -> AsyncMockCursor:
        self._cursor = self._cursor.sort(*args, **kwargs)
        return self

    def skip(self, count: int) -> AsyncMockCursor:
        self._cursor = self._cursor.skip(count)
        return self

    def limit(self, count: int) -> AsyncMockCursor:
        self._cursor = self._cursor.limit(count)
        return self

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        self._client.check()
        rows = list(self._cursor)
        return rows if length is None else rows[:length]

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        for row in await self.to_list():
            yield row


class AsyncMockCollection:
    def __init__(self, database: AsyncMockDatabase, name: str) -> None:
        self.database = database
        self.name = name
        self._client = database.client
        self.sync = database.sync[name]

    # -- write guard ----------------------------------------------------------

    def _guard(self, session: MockSession | None, doc_id: Any) -> None:
        self._client.writes += 1
        key: LockKey = (self.database.name, self.name, doc_id)
        owner = self._client.locks.get(key)
        if owner is not None and owner is not session:
            raise OperationFailure(
                "WriteConflict error: this operation conflicted with another operation",
                112,
                {"errorLabels": ["TransientTransactionError"], "codeName": "WriteConflict"},
            )
        if session is not None and session.in_transaction:
            session.before_write(self.sync, key, doc_id)

    def _guard_matching(self, session: MockSession | None, filter: dict[str, Any]) -> None:
        for doc in self.sync.find(filter, {"_id": 1}):
            self._guard(session, doc["_id"])

    def _guard_upserted(self, session: MockSession | None, upserted_id: Any) -> None:
        if upserted_id is not None:
            self._guard(session, upserted_id)

    # -- writes ---------------------------------------------------------------

    async def insert_one(self, document: dict[str, Any], session: Any = None) -> Any:
        self._client.check()
        document.setdefault("_id", ObjectId())
        self._guard(session, document["_id"])
        return self.sync.insert_one(document)

    async def insert_many(self, documents: list[dict[str, Any]], session: Any = None,
                          **kwargs: Any) -> Any:
        self._client.check()
        for document in documents:
            document.setdefault("_id", ObjectId())
            self._guard(session, document["_id"])
        return self.sync.insert_many(documents, **kwargs)

    async def update_one(self, filter: dict[str, Any], update: Any, upsert: bool = False,
                         session: Any = None, **kwargs: Any) -> Any:
        self._client.check()
        found = self.sync.find_one(filter, {"_id": 1})
        if found is not None:
            self._guard(session, found["_id"])
        result = self.sync.update_one(filter, update, upsert=upsert, **kwargs)
        self._guard_upserted(session, result.upserted_id)
        return result

    async def update_many(self, filter: dict[str, Any], update: Any, upsert: bool = False,
                          session: Any = None, **kwargs: Any) -> Any:
        self._client.check()
        self._guard_matching(session, filter)
        result = self.sync.update_many(filter, update, upsert=upsert, **kwargs)
        self._guard_upserted(session, result.upserted_id)
        return result

    async def replace_one(self, filter: dict[str, Any], replacement: dict[str, Any],
                          upsert: bool = False, session: Any = None) -> Any:
        self._client.check()
        found = self.sync.find_one(filter, {"_id": 1})
        if found is not None:
            self._guard(session, found["_id"])
        result = self.sync.replace_one(filter, replacement, upsert=upsert)
        self._guard_upserted(session, result.upserted_id)
        return result

    async def delete_one(self, filter: dict[str, Any], session: Any = None) -> Any:
        self._client.check()
        found = self.sync.find_one(filter, {"_id": 1})
        if found is not None:
            self._guard(session, found["_id"])
        return self.sync.delete_one(filter)

    async def delete_many(self, filter: dict[str, Any], session: Any = None) -> Any:
        self._client.check()
        self._guard_matching(session, filter)
        return self.sync.delete_many(filter)

    async def find_one_and_update(self, filter: dict[str, Any], update: Any,
                                  projection: Any = None, *, upsert: bool = False,
                                  return_document: Any = ReturnDocument.BEFORE,
                                  session: Any = None, **kwargs: Any) -> Any:
        self._client.check()
        found = self.sync.find_one(filter, {"_id": 1})
        if found is not None:
            self._guard(session, found["_id"])
        result = self.sync.find_one_and_update(
            filter, update, projection, upsert=upsert, return_document=return_document,
            **kwargs,
        )
        if found is None and result is not None and session is not None:
            self._guard(session, result["_id"])
        return result

    # -- reads ----------------------------------------------------------------

    async def find_one(self, filter: Any = None, projection: Any = None, *,
                       session: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        self._client.check()
        found: dict[str, Any] | None = self.sync.find_one(filter, projection, **kwargs)
        return found

    def find(self, filter: Any = None, projection: Any = None, *, session: Any = None,
             sort: Any = None, skip: int = 0, limit: int = 0, **kwargs: Any) -> AsyncMockCursor:
        cursor = self.sync.find(filter, projection, **kwargs)
        if sort:
            cursor = cursor.sort(sort)
        if skip:
            cursor = cursor.skip(skip)
        if limit:
            cursor = cursor.limit(limit)
        return AsyncMockCursor(self._client, cursor)

    async def count_documents(self, filter: dict[str, Any], session: Any = None,
                              **kwargs: Any) -> int:
        self._client.check()
        return int(self.sync.count_documents(filter, **kwargs))

    async def distinct(self, key: str, filter: Any = None, session: Any = None) -> list[Any]:
        self._client.check()
        return list(self.sync.distinct(key, filter))

    async def aggregate(self, pipeline: list[dict[str, Any]], session: Any = None,
                        **kwargs: Any) -> AsyncMockCursor:
        self._client.check()
        return AsyncMockCursor(self._client, self.sync.aggregate(pipeline, **kwargs))

    # -- indexes --------------------------------------------------------------

    async def create_index(self, keys: Any, **kwargs: Any) -> str:
        self._client.check()
        return str(self.sync.create_index(keys, **kwargs))

    async def create_indexes(self, indexes: list[Any], **kwargs: Any) -> list[str]:
        self._client.check()
        return list(self.sync.create_indexes(indexes, **kwargs))

    async def index_information(self) -> dict[str, Any]:
        self._client.check()
        return dict(self.sync.index_information())

    async def drop(self, session: Any = None) -> None:
        self._client.check()
        self.sync.drop()
