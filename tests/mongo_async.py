"""A thin async facade over mongomock with the part of the `pymongo.AsyncMongoClient`
API that the MongoDB store uses, for CI machines where no MongoDB server can run.

mongomock is synchronous and has no sessions or transactions. What this facade
emulates, and how far that goes:

- Transactions, with snapshot-style isolation for readers: at a transaction's
  first write to a collection the session takes a private copy of it (documents and
  indexes, in a mongomock client of its own); its later reads and writes of that
  collection go to the copy, so it reads its own writes while other sessions and
  plain reads see only committed data. Commit publishes the documents it changed
  (by _id, deletions included) to the shared collections in one synchronous step,
  so no other coroutine sees a part of it; abort drops the copies.
- Write conflicts, first writer wins as in MongoDB (WriteConflict, code 112, label
  TransientTransactionError): a document written by an open transaction is
  write-locked against other transactions and plain writes (MongoDB makes a plain
  write wait for the transaction instead); a transaction writing a
  document that someone changed after its copy was taken conflicts at that write
  (and commit checks it again). Unique indexes: a duplicate within the transaction's
  view is a DuplicateKeyError at the write (the copy has the indexes); a unique key
  held by another open transaction, or taken in the shared collection after the
  copy, is a WriteConflict at the write; should the shared collection refuse a key
  at commit after all, nothing is published and the commit is a WriteConflict.
  Unique indexes are checked on plain (not sparse, partial or multikey) fields.
- Not emulated: a snapshot taken at the transaction's start. A collection the
  transaction has not written yet is read as last committed, so two of its reads
  may see different commits of other sessions; MongoDB reads every collection at
  one point in time. Nor write concern, failover, retryable commits, or the query
  planner (mongomock scans). Tests that need those go to a real server
  (FHIR_FUSION_TEST_MONGODB).
- One snapshot per transaction (added for review-mongo #6), with
  `AsyncMockClient(one_snapshot=True)`: at a transaction's first operation (read or
  write) the session copies every collection of that database, so all its reads see
  the data as committed at that moment, as MongoDB's snapshot read concern does; a
  later write to a document another session committed after that moment is a
  WriteConflict. Off by default: copying every collection per transaction is slow.
- Outages: `client.down = True` makes every call fail with
  ServerSelectionTimeoutError, as an unreachable server does; `fail_after(n)` lets
  n more calls through first (the database going away mid-request). An abort
  while down still drops the transaction's copies: a real server discards an
  abandoned transaction by itself.
- Server errors (added for review-mongo #1/#2): `fail_next(exc)` makes the next
  database call raise `exc` (e.g. an OperationFailure with the code a mongos answers
  when a shard has no primary, or the ExecutionTimeout of an expired `timeoutMS`),
  once, then the facade works again.
- Document size (added for review-mongo #3): an insert or replacement whose BSON
  encoding is over 16 MiB raises pymongo.errors.DocumentTooLarge, as the driver does
  before sending it (mongomock has no limit).
- `close()` is recorded (`client.closed`), for the start-up error paths.
- A `$regex` pattern holding a NUL character is refused in a query filter
  (OperationFailure 51091, as the server refuses it; added for review-mongo #13);
  mongomock would match it.
- `admin.command("hello")` answers as a replica-set member, or as a standalone
  server with `replica_set=False`.
- Causal consistency, recorded only: each commit gives its session an operation
  time (a bson Timestamp from a counter) and cluster time, sessions accept
  `advance_operation_time` / `advance_cluster_time`, and `client.sessions` lists the
  sessions started, so a test sees which time a read was told to wait for. Nothing
  waits: the facade has one copy of the data, always current.

Product code never imports this module: it is in tests/ only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import bson
import mongomock
from bson import ObjectId, Timestamp
from pymongo import ReturnDocument
from pymongo.errors import (
    DocumentTooLarge,
    DuplicateKeyError,
    OperationFailure,
    ServerSelectionTimeoutError,
)

LockKey = tuple[str, str, Any]  # database, collection, _id
UniqueKey = tuple[str, str, str, str]  # database, collection, index, its values


class AsyncMockClient:
    def __init__(self, *, replica_set: bool = True, one_snapshot: bool = False) -> None:
        self.one_snapshot = one_snapshot  # review-mongo #6 (module docstring)
        self.sync = mongomock.MongoClient()
        self.replica_set = replica_set
        self.down = False
        self._calls_left: int | None = None
        self.locks: dict[LockKey, MockSession] = {}
        self.isolation = _Isolation()
        self.writes = 0  # documents written, for tests that fail a request part-way
        self.admin = _Admin(self)
        # causal consistency, recorded only (module docstring)
        self.sessions: list[MockSession] = []
        self.commits = 0
        self._fail_next: Exception | None = None  # server errors (module docstring)
        self.closed = False

    def fail_after(self, calls: int) -> None:
        """Let `calls` more database calls through, then behave as if the server went away."""
        self._calls_left = calls

    def fail_next(self, error: Exception) -> None:
        """Make the next database call raise `error` (a server error), once."""
        self._fail_next = error

    def check(self) -> None:
        if self._fail_next is not None:
            error, self._fail_next = self._fail_next, None
            raise error
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
        session = MockSession(self)
        self.sessions.append(session)
        return session

    async def close(self) -> None:
        self.closed = True


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


class _Isolation:
    """What the transactions of one client share: who holds which document and which
    unique key, and when each document last changed in the shared collections (a tick
    of `clock`, which advances at every plain write and every commit)."""

    def __init__(self) -> None:
        self.clock = 0
        self.changed: dict[LockKey, int] = {}
        self.key_locks: dict[UniqueKey, MockSession] = {}

    def advance(self) -> int:
        self.clock += 1
        return self.clock


class _PrivateCopy:
    """One collection as a transaction sees it: the shared collection as it was at the
    transaction's first write to it, with the transaction's writes applied."""

    def __init__(self, shared: Any, private: Any, copied_at: int) -> None:
        self.shared = shared
        self.private = private
        self.copied_at = copied_at
        self.touched: set[Any] = set()  # _ids this transaction wrote (or deleted)
        self.unique: list[tuple[str, list[str]]] = []  # (index name, fields)

    @classmethod
    def take(cls, shared: Any, private: Any, copied_at: int) -> _PrivateCopy:
        copy = cls(shared, private, copied_at)
        documents = list(shared.find())
        if documents:
            private.insert_many(documents)
        # indexes after the documents: mongomock checks a unique index against every
        # document at each insert, which made copying quadratic
        for name, info in shared.index_information().items():
            if name == "_id_":
                continue
            keys = list(info["key"])
            options = {k: v for k, v in info.items() if k not in ("key", "v", "ns")}
            private.create_index(keys, name=name, **options)
            plain = not (info.get("sparse") or info.get("partialFilterExpression"))
            if info.get("unique") and plain:
                copy.unique.append((name, [field for field, _ in keys]))
        return copy


class MockSession:
    """A session whose transaction writes to private copies of the collections it changes
    and publishes them at commit (see the module docstring)."""

    def __init__(self, client: AsyncMockClient) -> None:
        self._client = client
        self._active = False
        self._private: Any = None  # a mongomock client of its own, for the copies
        self._copies: dict[tuple[str, str], _PrivateCopy] = {}
        self._held: set[LockKey] = set()
        self._held_keys: set[UniqueKey] = set()
        self._snapped = False  # one_snapshot: the collections are copied
        # causal consistency, recorded only (module docstring)
        self.operation_time: Timestamp | None = None
        self.cluster_time: dict[str, Any] | None = None

    def advance_operation_time(self, operation_time: Timestamp) -> None:
        if self.operation_time is None or operation_time > self.operation_time:
            self.operation_time = operation_time

    def advance_cluster_time(self, cluster_time: dict[str, Any]) -> None:
        if self.cluster_time is None or (
            cluster_time["clusterTime"] > self.cluster_time["clusterTime"]
        ):
            self.cluster_time = cluster_time

    @property
    def in_transaction(self) -> bool:
        return self._active

    async def start_transaction(self, **_: Any) -> None:
        if self._active:
            raise mongomock.InvalidOperation("Transaction already in progress")
        self._client.check()
        self._active = True

    def copy_if_any(self, collection: AsyncMockCollection) -> _PrivateCopy | None:
        self.snapshot(collection.database)
        return self._copies.get((collection.database.name, collection.name))

    def snapshot(self, database: AsyncMockDatabase) -> None:
        """With `one_snapshot`, copy every collection at the transaction's first
        operation (review-mongo #6, module docstring)."""
        if not self._client.one_snapshot or self._snapped:
            return
        self._snapped = True
        for name in database.sync.list_collection_names():
            self.private_copy(database[name])

    def private_copy(self, collection: AsyncMockCollection) -> _PrivateCopy:
        """The transaction's copy of `collection`, taken at its first write there."""
        self.snapshot(collection.database)
        where = (collection.database.name, collection.name)
        copy = self._copies.get(where)
        if copy is None:
            if self._private is None:
                self._private = mongomock.MongoClient()
            private = self._private[where[0]][where[1]]
            copy = _PrivateCopy.take(collection.sync, private, self._client.isolation.clock)
            self._copies[where] = copy
        return copy

    def hold(self, copy: _PrivateCopy, key: LockKey) -> None:
        """Write-lock a document for this transaction: a conflict when someone else
        changed it after the copy was taken (snapshot isolation's first-writer rule)."""
        if key in self._held:
            return
        if self._client.isolation.changed.get(key, 0) > copy.copied_at:
            raise write_conflict()
        self._held.add(key)
        self._client.locks[key] = self
        copy.touched.add(key[2])

    def hold_unique_keys(self, collection: AsyncMockCollection, copy: _PrivateCopy,
                         doc_id: Any) -> None:
        """The unique-index keys of a document just written: held by this transaction,
        and a conflict when another transaction holds them or when a shared document
        with the same key changed after the copy (the copy itself raised
        DuplicateKeyError for the keys it knows)."""
        document = copy.private.find_one({"_id": doc_id})
        if document is None or not copy.unique:
            return
        isolation = self._client.isolation
        for name, fields in copy.unique:
            values = [_dotted(document, field) for field in fields]
            if any(isinstance(value, list) for value in values):
                continue  # a multikey unique index: not emulated (the store has none)
            lock = (collection.database.name, collection.name, name, repr(values))
            owner = isolation.key_locks.get(lock)
            if owner is not None and owner is not self:
                raise write_conflict()
            isolation.key_locks[lock] = self
            self._held_keys.add(lock)
            same = {field: value for field, value in zip(fields, values)}
            for other in copy.shared.find({**same, "_id": {"$ne": doc_id}}, {"_id": 1}):
                key: LockKey = (collection.database.name, collection.name, other["_id"])
                if key in self._held:
                    continue  # this transaction changed or deleted it
                owner = self._client.locks.get(key)
                if (owner is not None and owner is not self) or (
                    isolation.changed.get(key, 0) > copy.copied_at
                ):
                    raise write_conflict()

    async def commit_transaction(self) -> None:
        self._client.check()
        try:
            _publish(list(self._copies.values()), self._client.isolation)
        finally:
            self._finish()
        self._client.commits += 1  # the commit's time, as a server's reply carries it
        self.operation_time = Timestamp(1_700_000_000, self._client.commits)
        self.cluster_time = {"clusterTime": self.operation_time}

    async def abort_transaction(self) -> None:
        self._finish()  # the copies are dropped, the shared collections never saw them
        self._client.check()

    def _finish(self) -> None:
        locks, key_locks = self._client.locks, self._client.isolation.key_locks
        for key in self._held:
            if locks.get(key) is self:
                del locks[key]
        for lock in self._held_keys:
            if key_locks.get(lock) is self:
                del key_locks[lock]
        self._held = set()
        self._held_keys = set()
        self._copies = {}
        self._snapped = False
        self._private = None
        self._active = False

    async def end_session(self) -> None:
        if self._active:
            try:
                await self.abort_transaction()
            except ServerSelectionTimeoutError:
                pass


def _publish(copies: list[_PrivateCopy], isolation: _Isolation) -> None:
    """Apply the documents a transaction changed to the shared collections, all or
    nothing: synchronous, so no other coroutine sees a part of it, and undone when a
    unique key is taken after all (then WriteConflict)."""
    for copy in copies:
        for doc_id in copy.touched:
            key = (copy.shared.database.name, copy.shared.name, doc_id)
            if isolation.changed.get(key, 0) > copy.copied_at:
                raise write_conflict()
    deletes: list[tuple[_PrivateCopy, Any]] = []
    replaces: list[tuple[_PrivateCopy, dict[str, Any]]] = []
    inserts: list[tuple[_PrivateCopy, dict[str, Any]]] = []
    priors: dict[tuple[int, Any], dict[str, Any] | None] = {}
    for copy in copies:
        for doc_id in copy.touched:
            mine = copy.private.find_one({"_id": doc_id})
            prior = copy.shared.find_one({"_id": doc_id})
            priors[id(copy), doc_id] = prior
            if mine is None:
                if prior is not None:
                    deletes.append((copy, doc_id))
            elif prior is None:
                inserts.append((copy, mine))
            else:
                replaces.append((copy, mine))
    done: list[tuple[_PrivateCopy, Any]] = []
    try:
        # deletions first, so that a key this transaction freed can be taken again
        for copy, doc_id in deletes:
            done.append((copy, doc_id))
            copy.shared.delete_one({"_id": doc_id})
        for copy, document in replaces:
            done.append((copy, document["_id"]))
            copy.shared.replace_one({"_id": document["_id"]}, document)
        for copy, document in inserts:
            done.append((copy, document["_id"]))
            copy.shared.insert_one(document)
    except DuplicateKeyError:
        for copy, doc_id in reversed(done):
            copy.shared.delete_one({"_id": doc_id})
            prior = priors[id(copy), doc_id]
            if prior is not None:
                copy.shared.insert_one(prior)
        raise write_conflict() from None
    tick = isolation.advance()
    for copy in copies:
        for doc_id in copy.touched:
            isolation.changed[(copy.shared.database.name, copy.shared.name, doc_id)] = tick


MAX_BSON_SIZE = 16 * 1024 * 1024  # a server's maxBsonObjectSize


def refuse_too_large(document: dict[str, Any]) -> None:
    """The driver's client-side size check (module docstring), on what it would send."""
    try:
        size = len(bson.encode(document))
    except (bson.errors.InvalidDocument, TypeError):
        return  # not BSON-encodable as is: mongomock decides, as before
    if size > MAX_BSON_SIZE:
        raise DocumentTooLarge(
            f"BSON document too large ({size} bytes) - the connected server supports BSON "
            f"document sizes up to {MAX_BSON_SIZE} bytes."
        )


def refuse_nul_regex(filter: Any) -> None:
    """The server's refusal of a regular expression with an embedded NUL (docstring)."""
    if isinstance(filter, dict):
        pattern = filter.get("$regex")
        if isinstance(pattern, str) and "\x00" in pattern:
            raise OperationFailure(
                "Regular expression cannot contain an embedded null byte", 51091,
                {"codeName": "Location51091"},
            )
        for value in filter.values():
            refuse_nul_regex(value)
    elif isinstance(filter, list):
        for value in filter:
            refuse_nul_regex(value)


def write_conflict() -> OperationFailure:
    return OperationFailure(
        "WriteConflict error: this operation conflicted with another operation",
        112,
        {"errorLabels": ["TransientTransactionError"], "codeName": "WriteConflict"},
    )


def _dotted(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _transaction(session: Any) -> MockSession | None:
    return session if isinstance(session, MockSession) and session.in_transaction else None


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

    # -- where a call goes (the shared collection or a transaction's copy) ------

    def _reading(self, session: Any) -> Any:
        txn = _transaction(session)
        copy = txn.copy_if_any(self) if txn is not None else None
        return self.sync if copy is None else copy.private

    def _writing(self, session: Any) -> _Writer:
        txn = _transaction(session)
        if txn is None:
            return _Writer(self, self.sync, None, None)
        copy = txn.private_copy(self)
        return _Writer(self, copy.private, txn, copy)

    # -- writes ---------------------------------------------------------------

    async def insert_one(self, document: dict[str, Any], session: Any = None) -> Any:
        self._client.check()
        refuse_too_large(document)
        writer = self._writing(session)
        document.setdefault("_id", ObjectId())
        writer.guard(document["_id"])
        result = writer.target.insert_one(document)
        writer.written([document["_id"]])
        return result

    async def insert_many(self, documents: list[dict[str, Any]], session: Any = None,
                          **kwargs: Any) -> Any:
        self._client.check()
        for document in documents:
            refuse_too_large(document)
        writer = self._writing(session)
        for document in documents:
            document.setdefault("_id", ObjectId())
            writer.guard(document["_id"])
        result = writer.target.insert_many(documents, **kwargs)
        writer.written([document["_id"] for document in documents])
        return result

    async def update_one(self, filter: dict[str, Any], update: Any, upsert: bool = False,
                         session: Any = None, **kwargs: Any) -> Any:
        self._client.check()
        writer = self._writing(session)
        ids = writer.guard_matching(filter, first=True)
        result = writer.target.update_one(filter, update, upsert=upsert, **kwargs)
        writer.written(ids + writer.guard_upserted(result.upserted_id))
        return result

    async def update_many(self, filter: dict[str, Any], update: Any, upsert: bool = False,
                          session: Any = None, **kwargs: Any) -> Any:
        self._client.check()
        writer = self._writing(session)
        ids = writer.guard_matching(filter)
        result = writer.target.update_many(filter, update, upsert=upsert, **kwargs)
        writer.written(ids + writer.guard_upserted(result.upserted_id))
        return result

    async def replace_one(self, filter: dict[str, Any], replacement: dict[str, Any],
                          upsert: bool = False, session: Any = None) -> Any:
        self._client.check()
        refuse_too_large(replacement)
        writer = self._writing(session)
        ids = writer.guard_matching(filter, first=True)
        result = writer.target.replace_one(filter, replacement, upsert=upsert)
        writer.written(ids + writer.guard_upserted(result.upserted_id))
        return result

    async def delete_one(self, filter: dict[str, Any], session: Any = None) -> Any:
        self._client.check()
        writer = self._writing(session)
        writer.guard_matching(filter, first=True)
        return writer.target.delete_one(filter)

    async def delete_many(self, filter: dict[str, Any], session: Any = None) -> Any:
        self._client.check()
        writer = self._writing(session)
        writer.guard_matching(filter)
        return writer.target.delete_many(filter)

    async def find_one_and_update(self, filter: dict[str, Any], update: Any,
                                  projection: Any = None, *, upsert: bool = False,
                                  return_document: Any = ReturnDocument.BEFORE,
                                  session: Any = None, **kwargs: Any) -> Any:
        self._client.check()
        writer = self._writing(session)
        ids = writer.guard_matching(filter, first=True)
        result = writer.target.find_one_and_update(
            filter, update, projection, upsert=upsert, return_document=return_document,
            **kwargs,
        )
        if not ids and result is not None and "_id" in result:
            ids = writer.guard_upserted(result["_id"])
        writer.written(ids)
        return result

    # -- reads ----------------------------------------------------------------

    async def find_one(self, filter: Any = None, projection: Any = None, *,
                       session: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        self._client.check()
        refuse_nul_regex(filter)
        found: dict[str, Any] | None = self._reading(session).find_one(
            filter, projection, **kwargs
        )
        return found

    def find(self, filter: Any = None, projection: Any = None, *, session: Any = None,
             sort: Any = None, skip: int = 0, limit: int = 0, **kwargs: Any) -> AsyncMockCursor:
        refuse_nul_regex(filter)
        cursor = self._reading(session).find(filter, projection, **kwargs)
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
        refuse_nul_regex(filter)
        return int(self._reading(session).count_documents(filter, **kwargs))

    async def distinct(self, key: str, filter: Any = None, session: Any = None) -> list[Any]:
        self._client.check()
        return list(self._reading(session).distinct(key, filter))

    async def aggregate(self, pipeline: list[dict[str, Any]], session: Any = None,
                        **kwargs: Any) -> AsyncMockCursor:
        self._client.check()
        return AsyncMockCursor(self._client, self._reading(session).aggregate(pipeline, **kwargs))

    # -- indexes --------------------------------------------------------------

    async def create_index(self, keys: Any, **kwargs: Any) -> str:
        self._client.check()
        try:
            return str(self.sync.create_index(keys, **kwargs))
        except OperationFailure as exc:
            # added (review-mongo #12): mongomock refuses a same-name index with other
            # keys or options without a code; a server says IndexOptionsConflict (85)
            if exc.code is None and "already exists with different" in str(exc):
                raise OperationFailure(str(exc), 85, {"codeName": "IndexOptionsConflict"}) \
                    from None
            raise

    async def create_indexes(self, indexes: list[Any], **kwargs: Any) -> list[str]:
        self._client.check()
        try:
            return list(self.sync.create_indexes(indexes, **kwargs))
        except OperationFailure as exc:  # as create_index (review-mongo #12)
            if exc.code is None and "already exists with different" in str(exc):
                raise OperationFailure(str(exc), 85, {"codeName": "IndexOptionsConflict"}) \
                    from None
            raise

    async def index_information(self) -> dict[str, Any]:
        self._client.check()
        return dict(self.sync.index_information())

    async def drop_index(self, name: str) -> None:  # added: obsolete index names dropped
        self._client.check()
        self.sync.drop_index(name)

    async def drop(self, session: Any = None) -> None:
        self._client.check()
        self.sync.drop()


class _Writer:
    """One write call: where it goes, and its guard. A plain write (no transaction)
    changes the shared collection at once and fails on a document an open transaction
    holds; a transaction's write goes to its copy (see MockSession)."""

    def __init__(self, collection: AsyncMockCollection, target: Any,
                 txn: MockSession | None, copy: _PrivateCopy | None) -> None:
        self.collection = collection
        self.target = target
        self.txn = txn
        self.copy = copy

    def guard(self, doc_id: Any) -> None:
        client = self.collection._client
        client.writes += 1
        key: LockKey = (self.collection.database.name, self.collection.name, doc_id)
        owner = client.locks.get(key)
        if owner is not None and owner is not self.txn:
            raise write_conflict()
        if self.txn is None or self.copy is None:
            client.isolation.changed[key] = client.isolation.advance()
        else:
            self.txn.hold(self.copy, key)

    def guard_matching(self, filter: dict[str, Any], *, first: bool = False) -> list[Any]:
        found = self.target.find(filter, {"_id": 1})
        ids = [doc["_id"] for doc in (found.limit(1) if first else found)]
        for doc_id in ids:
            self.guard(doc_id)
        return ids

    def guard_upserted(self, upserted_id: Any) -> list[Any]:
        if upserted_id is None:
            return []
        self.guard(upserted_id)
        return [upserted_id]

    def written(self, ids: list[Any]) -> None:
        if self.txn is not None and self.copy is not None:
            for doc_id in ids:
                self.txn.hold_unique_keys(self.collection, self.copy, doc_id)
