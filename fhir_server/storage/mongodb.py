"""The MongoDB store: the storage interface of base.py on PyMongo's asyncio API
(`pymongo.AsyncMongoClient`), for deployments larger than one machine.

Semantics mirror the embedded store (sqlite.py) exactly: versions count from 1,
lastUpdated is a strictly increasing UTC instant per process (advanced past the
newest stored one at the start of every transaction, so several API workers do
not hand out instants that sort before each other's by more than clock skew), a
delete writes a version without body, an update equal to the current content
writes nothing ("unchanged"), history is newest first with `_since` inclusive.
Document shapes are in mongodb_documents.py. Every document and every query
carries the tenant of the Context.

Transactions are real multi-document transactions (snapshot read concern,
majority write concern), so they need a replica set or a sharded cluster: on a
standalone server `transaction()` raises a 501 OperationOutcome that says so, and
the server only reads. Plain reads use majority read concern on the primary, in
causally consistent sessions advanced to this worker's last commit
(mongodb_causal.py), so a client reads its own acknowledged writes. Through mongos
the store only detects the cluster (ids kept unique by resource_ids); the operator
declares the shard keys once with `fhir-fusion mongodb shard` (mongodb_sharding.py).

Every operation is bounded by the client-side operation timeout (PyMongo `timeoutMS`,
DEFAULT_TIMEOUT_MS unless the URL sets it): a majority write or a causal read that a
lagging replica set cannot satisfy ends in a 503 rather than a request that hangs.
Index builds at start-up get INDEX_BUILD_TIMEOUT_S instead. Documents are refused
with a 413 before they reach MongoDB's 16 MiB BSON limit (MAX_BODY_BYTES for a
resource, whose document also holds its index entries; MAX_INPUT_BYTES for a raw input).

Conditional creates (If-None-Exist, Bundle ifNoneExist, the feeds' identity keys)
call `Transaction.claim(type, criteria)` before they search: the transaction
waits for a lease on the normalised criteria (collection claim_leases, outside
the transaction, released when it ends); its first resource write then writes the
claim document (collection claims, unique _id, inside the transaction). Requests
for the same criteria thus run one after the other; should a lease expire, the
claim document still makes the later creator fail with a write conflict rather than
create a duplicate. A transaction whose snapshot was taken before the lease wait
(a Bundle whose earlier entry read or wrote, a feed) does not see the resource the
holder committed meanwhile: it creates, its claim document conflicts, and its caller
re-runs it in a new transaction (storage.retry), which finds the resource. A
transaction that already holds a lease and meets an older holder gives way
(wait-die): it lets go of its leases, waits for that holder to finish, and is re-run
the same way, so Bundles claiming the same criteria in opposite orders never wait
on each other.

For the search-index engine (outbox): every resource write and delete calls the
hooks in `MongoStore.write_hooks` with the open `MongoTransaction` and the new
`StoredResource`, inside the transaction; a hook inserts its record with
`txn.collection(OUTBOX)` and `session=txn.session`, so the record commits or
rolls back with the resource.

Search is compiled by mongodb_search.py (`search(db, ctx, query, session=)`), and
the index entries kept in each resource document come from its `index_entries`;
its INDEXES are created at start-up with the store's own.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import pymongo
from bson import Binary
from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from fhir_server import __version__, jsonutil
from fhir_server.errors import FHIRError, conflict, precondition_failed
from fhir_server.storage import mongodb_claims as claims
from fhir_server.storage import mongodb_documents as docs
from fhir_server.storage import mongodb_search, mongodb_sharding
from fhir_server.storage.base import Context, RawInput, SearchPage, StoredResource, WriteResult
from fhir_server.storage.mongodb_causal import CausalTimes
from fhir_server.storage.mongodb_errors import (
    MAX_DOCUMENT_BYTES,
    as_fhir_error,
    mapped,
    replica_set_required,
    too_large,
)
from fhir_server.storage.retry import unit_age
from fhir_server.storage.sqlite import _Clock, _utc_instant, _without_server_meta, content_hash
from search import custom

if TYPE_CHECKING:
    from fhir_server.storage.mongodb_reindex import MongoReindexJobs
    from search.query import SearchQuery

log = logging.getLogger(__name__)

WriteHook = Callable[["MongoTransaction", StoredResource], Awaitable[None]]

DEFAULT_DATABASE = "fhir_fusion"
SERVER_SELECTION_TIMEOUT_MS = 10_000
# client-side operation timeout (CSOT) for every call; `timeoutMS` in the URL overrides
DEFAULT_TIMEOUT_MS = 15_000
# index creation at start-up (a new index on a big collection is a long server build)
INDEX_BUILD_TIMEOUT_S = 3600.0
# below MAX_DOCUMENT_BYTES: a resource document holds the body and its index entries
MAX_BODY_BYTES = 15 * 1024 * 1024
# a raw input document holds the content plus a few small fields
MAX_INPUT_BYTES = MAX_DOCUMENT_BYTES - 64 * 1024

_INDEXES: dict[str, list[tuple[list[tuple[str, int]], dict[str, Any]]]] = {
    docs.RESOURCES: [
        ([("tenant", ASCENDING), ("type", ASCENDING), ("id", ASCENDING)],
         {"unique": True, "name": "by_type_id"}),
        ([("tenant", ASCENDING), ("type", ASCENDING), ("lastUpdated", DESCENDING)],
         {"name": "by_type_time"}),
        ([("tenant", ASCENDING), ("pc", ASCENDING)], {"name": "by_compartment"}),
        # the start-up load of SearchParameters (all tenants), a small partial index
        ([("type", ASCENDING), ("deleted", ASCENDING)],
         {"name": "search_parameters",
          "partialFilterExpression": {"type": "SearchParameter"}}),
    ],
    docs.HISTORY: [
        ([("tenant", ASCENDING), ("type", ASCENDING), ("id", ASCENDING),
          ("version", ASCENDING)], {"unique": True, "name": "by_version"}),
        # the whole _history sort (HISTORY_SORT) after the equality prefix, so no blocking
        # sort; new names (_v2): a changed key under an old name is a conflict (code 86)
        ([("tenant", ASCENDING), ("lastUpdated", DESCENDING), ("version", DESCENDING)],
         {"name": "by_time_v2"}),
        ([("tenant", ASCENDING), ("type", ASCENDING), ("lastUpdated", DESCENDING),
          ("version", DESCENDING)], {"name": "by_type_time_v2"}),
        ([("lastUpdated", DESCENDING)], {"name": "by_instant"}),
    ],
    # written inside transactions: created here, as MongoDB before 4.4 cannot create a
    # collection inside one
    docs.CLAIMS: [([("tenant", ASCENDING), ("type", ASCENDING)], {"name": "by_type"})],
    docs.CLAIM_LEASES: [([("until", ASCENDING)], {"name": "by_expiry"})],
    docs.FEED_COUNTS: [
        ([("tenant", ASCENDING), ("feed", ASCENDING), ("name", ASCENDING)], {"name": "by_feed"}),
    ],
    docs.INPUTS: [
        ([("tenant", ASCENDING), ("feed", ASCENDING), ("contentHash", ASCENDING),
          ("status", ASCENDING), ("_id", ASCENDING)], {"name": "by_hash"}),
        ([("tenant", ASCENDING), ("status", ASCENDING), ("_id", DESCENDING)],
         {"name": "by_status"}),
    ],
}


# indexes of earlier releases, replaced by the ones above: dropped at start-up
_OBSOLETE_INDEXES = {docs.HISTORY: ("by_time", "by_type_time")}

HISTORY_SORT = [("lastUpdated", DESCENDING), ("version", DESCENDING)]

# createIndex refusing an index whose name or keys exist with other options or keys
INDEX_CONFLICT_CODES = (85, 86)


class StoreUnavailable(RuntimeError):
    """The store named by a URL cannot be reached or used; the message names it."""


def describe_address(url: str) -> str:
    """host:port list of a MongoDB URL, without user name or password."""
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or "localhost:27017"


def _track_search_parameter(stored: dict[str, Any], version: int) -> None:
    """A SearchParameter written: checked, and its parameter defined, pending, for this
    process (as sqlite_reindex.track); `fhir-fusion reindex` (mongodb_reindex) makes it
    searchable."""
    param = custom.definition(stored, version)
    if param is None:
        custom.REGISTRY.forget(str(stored["id"]))
    else:
        custom.REGISTRY.define(param)


async def _load_search_parameters(db: Any) -> None:
    """Fill search.custom.REGISTRY from the stored SearchParameters; those whose
    version `fhir-fusion reindex` has finished (mongodb_reindex) are searchable."""
    from fhir_server.storage.mongodb_reindex import indexed_versions

    indexed = await indexed_versions(db)
    params: list[tuple[custom.CustomParam, bool]] = []
    found = db[docs.RESOURCES].find({"type": "SearchParameter", "deleted": False},
                                    {"body": 1, "version": 1})
    for doc in await found.to_list(None):
        try:
            param = custom.definition(jsonutil.loads(bytes(doc["body"])), doc["version"])
        except Exception:  # noqa: BLE001 - a definition stored before a stricter check
            continue
        if param is not None:
            params.append((param, indexed.get(param.resource_id) == param.version))
    custom.REGISTRY.replace_all(params)


async def _search(
    db: Any, ctx: Context, query: SearchQuery, session: Any, fulltext: Any
) -> SearchPage:
    return await mongodb_search.search(db, ctx, query, session=session, fulltext=fulltext)


class MongoTransaction:
    """The Transaction protocol inside one MongoDB multi-document transaction."""

    def __init__(self, store: MongoStore, ctx: Context, session: Any) -> None:
        self._store = store
        self._ctx = ctx
        self.session = session
        self._leases: list[tuple[str, str]] = []
        # (key, type) of claims whose claim document the next resource write writes
        self._unwritten_claims: list[tuple[str, str]] = []
        # orders transactions for the claim leases: start time, then a random tie-break;
        # a re-run (storage.retry) keeps its first attempt's
        self._age = unit_age()

    def collection(self, name: str) -> Any:
        return self._store.db[name]

    @property
    def context(self) -> Context:
        return self._ctx

    async def _current(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self.collection(docs.RESOURCES).find_one(
            docs.resource_filter(self._ctx.tenant, resource_type, resource_id),
            {"idx": 0},
            session=self.session,
        )
        return found

    @mapped
    async def read(self, resource_type: str, resource_id: str) -> StoredResource | None:
        doc = await self._current(resource_type, resource_id)
        return None if doc is None else docs.stored_from_document(doc)

    @mapped
    async def search(self, query: SearchQuery) -> SearchPage:
        return await _search(
            self._store.db, self._ctx, query, self.session, self._store.fulltext
        )

    @mapped
    async def claim(self, resource_type: str, criteria: str) -> None:
        """Serialise conditional creates on the same normalised criteria (see the module
        docstring); call before searching for the criteria."""
        key = f"{self._ctx.tenant}|{resource_type}|{criteria}"
        if any(held == key for held, _ in self._leases):
            return
        token = await claims.acquire(self._store.db, key, self._age, self._leases)
        self._leases.append((key, token))
        self._unwritten_claims.append((key, resource_type))

    async def _write_claims(self, written_type: str) -> None:
        """The claim documents of this transaction's claims on `written_type`, written
        with its first write of a resource of that type: only a transaction that
        creates or updates such a resource conflicts on them (two creators on the same
        criteria cannot both commit); one that finds the resource writes nothing, so
        it makes no other claimant's snapshot stale."""
        pending = []
        for key, resource_type in self._unwritten_claims:
            if resource_type != written_type:
                pending.append((key, resource_type))
                continue
            await self.collection(docs.CLAIMS).update_one(
                {"_id": key},
                {"$set": {"tenant": self._ctx.tenant, "type": resource_type},
                 "$inc": {"claims": 1}},
                upsert=True,
                session=self.session,
            )
        self._unwritten_claims[:] = pending

    async def _release(self) -> None:
        for key, token in self._leases:
            await claims.release(self._store.db, key, token)
        self._leases.clear()

    async def _write(
        self,
        resource: dict[str, Any],
        version: int,
        method: Literal["POST", "PUT"],
        fresh: bool,
        pc_before: str | None = None,
    ) -> StoredResource:
        resource_type, resource_id = resource["resourceType"], resource["id"]
        await self._write_claims(resource_type)
        tenant = self._ctx.tenant
        now = self._store._clock.now()
        meta = {**(resource.get("meta") or {}), "versionId": str(version), "lastUpdated": now}
        stored = {"resourceType": resource_type, "id": resource_id, "meta": meta, **resource}
        stored["meta"] = meta
        body = jsonutil.dumps(stored)
        if len(body) > MAX_BODY_BYTES:
            raise too_large(f"The {resource_type} ({len(body) // 1024} KiB)")
        if resource_type == "SearchParameter":
            _track_search_parameter(stored, version)  # 400 when it cannot be indexed
        compartment = docs.placement(stored)
        fields = {
            "tenant": tenant, "type": resource_type, "id": resource_id, "version": version,
            "lastUpdated": now, "deleted": False, "pc": compartment, "body": Binary(body),
        }
        current = {**fields, "idx": mongodb_search.index_entries(stored)}
        resources = self.collection(docs.RESOURCES)
        if fresh:
            if self._store.sharded:  # ids unique across shards (mongodb_sharding)
                await mongodb_sharding.claim_id(
                    self._store.db, self.session, tenant, resource_type, resource_id
                )
            # _id: a new ObjectId, kept by later versions (the search's keyset position)
            await resources.insert_one(current, session=self.session)
        else:
            # the version filter is the optimistic check; the transaction makes it exact.
            # pc: the full shard key, which MongoDB needs to move a document whose pc changes
            done = await resources.replace_one(
                {**docs.resource_filter(tenant, resource_type, resource_id),
                 "version": version - 1, "pc": pc_before},
                current, session=self.session,
            )
            if done.matched_count != 1:
                raise conflict(f"{resource_type}/{resource_id} was changed by another request")
        await self.collection(docs.HISTORY).insert_one(
            {"_id": docs.version_key(tenant, resource_type, resource_id, version),
             **fields, "method": method},
            session=self.session,
        )
        written = StoredResource(resource_type, resource_id, version, now, False, body, method)
        await self._store._run_hooks(self, written)
        return written

    @mapped
    async def create(
        self, resource: dict[str, Any], resource_id: str | None = None
    ) -> WriteResult:
        resource_id = resource_id or str(uuid.uuid4())
        if await self._current(resource["resourceType"], resource_id) is not None:
            raise conflict(f"{resource['resourceType']}/{resource_id} already exists")
        stored = await self._write({**resource, "id": resource_id}, 1, "POST", fresh=True)
        return WriteResult(stored, "created")

    @mapped
    async def update(self, resource: dict[str, Any], if_match: int | None = None) -> WriteResult:
        resource_type, resource_id = resource["resourceType"], resource["id"]
        current = await self._current(resource_type, resource_id)
        if current is None:
            if if_match is not None:
                raise precondition_failed(
                    f"If-Match names version {if_match} of {resource_type}/{resource_id}, "
                    "which does not exist"
                )
            return WriteResult(await self._write(resource, 1, "PUT", fresh=True), "created")
        version = current["version"]
        if if_match is not None and if_match != version:
            raise precondition_failed(
                f"{resource_type}/{resource_id} is at version {version}, not {if_match}"
            )
        if current["deleted"]:
            return WriteResult(
                await self._write(resource, version + 1, "PUT", False, current.get("pc")),
                "created",
            )
        body = bytes(current["body"])
        if _without_server_meta(jsonutil.loads(body)) == _without_server_meta(resource):
            unchanged = StoredResource(
                resource_type, resource_id, version, current["lastUpdated"], False, body, "PUT"
            )
            return WriteResult(unchanged, "unchanged")
        return WriteResult(
            await self._write(resource, version + 1, "PUT", False, current.get("pc")), "updated"
        )

    @mapped
    async def delete(
        self, resource_type: str, resource_id: str, if_match: int | None = None
    ) -> WriteResult:
        current = await self._current(resource_type, resource_id)
        if current is None:
            return WriteResult(None, "not-found")
        version = current["version"]
        if if_match is not None and if_match != version:
            raise precondition_failed(
                f"{resource_type}/{resource_id} is at version {version}, not {if_match}"
            )
        if current["deleted"]:
            marker = StoredResource(
                resource_type, resource_id, version, current["lastUpdated"], True, None, "DELETE"
            )
            return WriteResult(marker, "unchanged")
        tenant = self._ctx.tenant
        now = self._store._clock.now()
        version += 1
        fields = {
            "tenant": tenant, "type": resource_type, "id": resource_id, "version": version,
            "lastUpdated": now, "deleted": True, "pc": current.get("pc"), "body": None,
        }
        done = await self.collection(docs.RESOURCES).replace_one(
            {**docs.resource_filter(tenant, resource_type, resource_id), "version": version - 1,
             "pc": current.get("pc")},
            {**fields, "idx": {}},
            session=self.session,
        )
        if done.matched_count != 1:
            raise conflict(f"{resource_type}/{resource_id} was changed by another request")
        await self.collection(docs.HISTORY).insert_one(
            {"_id": docs.version_key(tenant, resource_type, resource_id, version),
             **fields, "method": "DELETE"},
            session=self.session,
        )
        if resource_type == "SearchParameter":
            custom.REGISTRY.forget(resource_id)
        marker = StoredResource(resource_type, resource_id, version, now, True, None, "DELETE")
        await self._store._run_hooks(self, marker)
        return WriteResult(marker, "deleted")

    @mapped
    async def record_input(
        self,
        feed: str,
        content: bytes,
        status: Literal["stored", "rejected"],
        reason: str | None = None,
        result: dict[str, Any] | None = None,
        input_id: int | None = None,
    ) -> int:
        result_json = Binary(jsonutil.dumps(result)) if result is not None else None
        inputs = self.collection(docs.INPUTS)
        if input_id is not None:
            done = await inputs.update_one(
                {"_id": input_id, "tenant": self._ctx.tenant},
                {"$set": {"status": status, "reason": reason, "result": result_json}},
                session=self.session,
            )
            if done.matched_count == 0:
                raise FHIRError.simple(404, "not-found", f"input {input_id} is not known")
            return input_id
        if len(content) > MAX_INPUT_BYTES:  # the sender keeps it (README "At scale")
            raise too_large(f"The {feed} input ({len(content) // 1024} KiB)")
        # the id comes from a counter outside the transaction: concurrent ingests would
        # otherwise all conflict on the counter document (an aborted one leaves a gap)
        new_id = await self._store._next_id(docs.INPUTS)
        await inputs.insert_one(
            {
                "_id": new_id, "tenant": self._ctx.tenant, "feed": feed,
                "receivedAt": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                "content": Binary(content), "contentHash": content_hash(content),
                "status": status, "reason": reason, "result": result_json,
            },
            session=self.session,
        )
        return new_id


    @mapped
    async def count_feed(self, feed: str, counts: Mapping[str, int]) -> None:
        # one small document per addition rather than $inc on one counter document,
        # which every concurrent ingest of the feed would conflict on; feed_counters sums
        additions = [
            {"tenant": self._ctx.tenant, "feed": feed, "name": name, "n": n,
             "at": datetime.now(timezone.utc).replace(tzinfo=None)}
            for name, n in counts.items() if n
        ]
        if additions:
            await self.collection(docs.FEED_COUNTS).insert_many(additions, session=self.session)


class MongoStore:
    """The ResourceStore protocol on one MongoDB database."""

    def __init__(self, client: Any, db: Any, address: str, transactions: bool) -> None:
        self.client = client
        self.db = db
        self.address = address
        self.supports_transactions = transactions
        self.write_hooks: list[WriteHook] = []
        # the full-text index (search.fulltext.FullTextIndex, e.g. Elasticsearch) that
        # _text / _content go to; None makes them a 400
        self.fulltext: Any = None
        # connected through mongos: shard keys declared, ids kept unique by mongodb_sharding
        self.sharded = False
        # read-your-writes: reads and transactions start after this worker's commits
        self._causal = CausalTimes(client)
        self._clock = _Clock()

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        database: str | None = None,
        client: Any = None,
        server_selection_timeout_ms: int = SERVER_SELECTION_TIMEOUT_MS,
    ) -> MongoStore:
        """Connect, check the server answers, create the indexes (idempotent).

        `client` is for tests (an object with the AsyncMongoClient API); by default a
        `pymongo.AsyncMongoClient` is made for `url` with majority write concern."""
        address = describe_address(url)
        if client is None:
            from pymongo import AsyncMongoClient

            options = client_options(url, server_selection_timeout_ms)
            try:
                client = AsyncMongoClient(url, tz_aware=False, **options)
            except (PyMongoError, ValueError) as exc:  # a malformed URL or option
                raise StoreUnavailable(f"cannot use MongoDB at {address}: {exc}") from None
        try:
            hello = await client.admin.command("hello")
            name = database or _database_in(url) or DEFAULT_DATABASE
            db = client[name]
            # a replica set names itself; mongos answers msg "isdbgrid"
            transactions = "setName" in hello or hello.get("msg") == "isdbgrid"
            store = cls(client, db, address, transactions)
            # through mongos: detected only; the shard keys are the operator's command
            store.sharded = mongodb_sharding.through_mongos(hello)
            await store._create_indexes()
            if store.sharded:
                await mongodb_sharding.check_layout(db)
            await _load_search_parameters(db)
            latest = await db[docs.HISTORY].find_one(
                {}, {"lastUpdated": 1}, sort=[("lastUpdated", DESCENDING)]
            )
        except PyMongoError as exc:
            await _close_quietly(client)
            if isinstance(exc, OperationFailure) and exc.code in INDEX_CONFLICT_CODES:
                # the search indexes (mongodb_search.create_indexes, several at once):
                # the server's message names the index
                raise StoreUnavailable(
                    f"MongoDB at {address} refused an index of fhir-fusion {__version__} "
                    f"(code {exc.code}, an index of that name or keys exists with other "
                    f"options: {_first_line(exc)}); drop that index and start again: it "
                    "is rebuilt at start-up"
                ) from None
            raise StoreUnavailable(
                f"cannot use MongoDB at {address}: {type(exc).__name__}: {_first_line(exc)}"
            ) from None
        except BaseException:  # StoreUnavailable, a stored document that cannot be read...
            await _close_quietly(client)
            raise
        if latest is not None:
            store._clock.advance_past(latest["lastUpdated"])
        if not transactions:
            log.warning(
                "MongoDB at %s is a standalone server, without transactions: every write "
                "will be refused with a 501 until it runs as a replica set", address,
            )
        return store

    async def _create_indexes(self) -> None:
        with pymongo.timeout(INDEX_BUILD_TIMEOUT_S):
            specs = await mongodb_sharding.serve_index_specs(self.db, _INDEXES, self.sharded)
            for collection, names in _OBSOLETE_INDEXES.items():
                info = await self.db[collection].index_information()
                for name in names:
                    if name in info:
                        await self.db[collection].drop_index(name)
            for collection, collection_specs in specs.items():
                for keys, options in collection_specs:
                    await _create_index(self.db, collection, keys, options)
            await mongodb_search.create_indexes(self.db)

    async def close(self) -> None:
        await _close_quietly(self.client)

    async def _run_hooks(self, txn: MongoTransaction, stored: StoredResource) -> None:
        for hook in self.write_hooks:
            await hook(txn, stored)

    async def _next_id(self, name: str) -> int:
        doc = await self.db[docs.COUNTERS].find_one_and_update(
            {"_id": name}, {"$inc": {"n": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return int(doc["n"])

    async def _advance_clock(self) -> None:
        latest = await self.db[docs.HISTORY].find_one(
            {}, {"lastUpdated": 1}, sort=[("lastUpdated", DESCENDING)]
        )
        if latest is not None:
            self._clock.advance_past(latest["lastUpdated"])

    @asynccontextmanager
    async def transaction(self, ctx: Context) -> AsyncIterator[MongoTransaction]:
        if not self.supports_transactions:
            raise replica_set_required("Writing")
        try:
            await self._advance_clock()
            session = self.client.start_session()
            self._causal.advance(session)
        except PyMongoError as exc:
            raise as_fhir_error(exc) from exc
        txn = MongoTransaction(self, ctx, session)
        try:
            try:
                await session.start_transaction(
                    read_concern=ReadConcern("snapshot"),
                    write_concern=WriteConcern("majority"),
                )
            except PyMongoError as exc:
                raise as_fhir_error(exc) from exc
            try:
                yield txn
            except BaseException as exc:
                await _abort_quietly(session)
                if isinstance(exc, (PyMongoError, InvalidDocument)):  # e.g. a write hook's
                    raise as_fhir_error(exc) from exc
                raise
            try:
                await _commit(session)
            except PyMongoError as exc:
                raise as_fhir_error(exc) from exc
            self._causal.note(session)
        finally:
            await txn._release()
            try:
                await session.end_session()
            except PyMongoError:
                pass

    @asynccontextmanager
    async def batch(self, ctx: Context) -> AsyncIterator[None]:
        """A hint the MongoDB store does not take: each transaction commits on its own."""
        yield

    def reindex_jobs(self) -> MongoReindexJobs:
        """The resumable index-rebuild jobs of this database (storage.reindex_jobs)."""
        from fhir_server.storage.mongodb_reindex import MongoReindexJobs

        return MongoReindexJobs(self.db)

    # -- reads ---------------------------------------------------------------

    @mapped
    async def read(
        self, ctx: Context, resource_type: str, resource_id: str
    ) -> StoredResource | None:
        async with self._causal.reading() as session:
            doc = await self.db[docs.RESOURCES].find_one(
                docs.resource_filter(ctx.tenant, resource_type, resource_id), {"idx": 0},
                session=session,
            )
        return None if doc is None else docs.stored_from_document(doc)

    @mapped
    async def vread(
        self, ctx: Context, resource_type: str, resource_id: str, version: int
    ) -> StoredResource | None:
        async with self._causal.reading() as session:
            doc = await self.db[docs.HISTORY].find_one(
                {"_id": docs.version_key(ctx.tenant, resource_type, resource_id, version),
                 "tenant": ctx.tenant},
                session=session,
            )
        return None if doc is None else docs.stored_from_document(doc)

    @mapped
    async def history(
        self,
        ctx: Context,
        resource_type: str | None = None,
        resource_id: str | None = None,
        since: str | None = None,
        count: int = 50,
        offset: int = 0,
    ) -> tuple[list[StoredResource], int]:
        where: dict[str, Any] = {"tenant": ctx.tenant}
        if resource_type is not None:
            where["type"] = resource_type
        if resource_id is not None:
            where["id"] = resource_id
        if since is not None:
            where["lastUpdated"] = {"$gte": _utc_instant(since)}
        history = self.db[docs.HISTORY]
        async with self._causal.reading() as session:
            total = await history.count_documents(where, session=session)
            if count <= 0:  # MongoDB reads limit 0 as "no limit"; SQLite's LIMIT 0 as none
                return [], total
            found = history.find(
                where, sort=HISTORY_SORT, skip=offset, limit=count, session=session,
            )
            rows = await found.to_list(None)
        return [docs.stored_from_document(doc) for doc in rows], total

    @mapped
    async def search(self, ctx: Context, query: SearchQuery) -> SearchPage:
        # token :in/:not-in/:above/:below become plain token clauses over the codes they
        # stand for (the concept store: terminology.mongodb_store), as SQLiteStore.search
        from terminology.search_modifiers import resolve

        query = await resolve(self, ctx, query)
        async with self._causal.reading() as session:
            return await _search(self.db, ctx, query, session, self.fulltext)

    # -- raw feed inputs -----------------------------------------------------

    @mapped
    async def find_input(
        self, ctx: Context, feed: str, content_hash: str, status: str = "stored"
    ) -> RawInput | None:
        found = self.db[docs.INPUTS].find(
            {"tenant": ctx.tenant, "feed": feed, "contentHash": content_hash, "status": status},
            sort=[("_id", ASCENDING)], limit=1,
        )
        rows = await found.to_list(1)
        return docs.input_from_document(rows[0]) if rows else None

    @mapped
    async def get_input(self, ctx: Context, input_id: int) -> RawInput | None:
        doc = await self.db[docs.INPUTS].find_one({"_id": input_id, "tenant": ctx.tenant})
        return None if doc is None else docs.input_from_document(doc)

    @mapped
    async def list_inputs(
        self,
        ctx: Context,
        feed: str | None = None,
        status: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[RawInput]:
        where: dict[str, Any] = {"tenant": ctx.tenant}
        if before is not None:
            where["_id"] = {"$lt": before}
        if feed is not None:
            where["feed"] = feed
        if status is not None:
            where["status"] = status
        if limit <= 0:
            return []
        found = self.db[docs.INPUTS].find(where, sort=[("_id", DESCENDING)], limit=limit)
        return [docs.input_from_document(doc) for doc in await found.to_list(None)]

    @mapped
    async def feed_counters(self, ctx: Context) -> dict[str, dict[str, int]]:
        counters: dict[str, dict[str, int]] = {}
        sums = await self.db[docs.FEED_COUNTS].aggregate([
            {"$match": {"tenant": ctx.tenant}},
            {"$group": {"_id": {"feed": "$feed", "name": "$name"}, "n": {"$sum": "$n"}}},
        ])
        for row in await sums.to_list(None):
            counters.setdefault(row["_id"]["feed"], {})[row["_id"]["name"]] = int(row["n"])
        pending = await self.db[docs.INPUTS].aggregate([
            {"$match": {"tenant": ctx.tenant, "status": "rejected"}},
            {"$group": {"_id": "$feed", "n": {"$sum": 1}}},
        ])
        for row in await pending.to_list(None):
            counters.setdefault(row["_id"], {})["pending"] = int(row["n"])
        return counters


def client_options(url: str, server_selection_timeout_ms: int) -> dict[str, Any]:
    """The AsyncMongoClient options the store adds to `url`: majority write and read
    concern, and the two timeouts unless the URL sets them (its own values win)."""
    options: dict[str, Any] = {"w": "majority", "readConcernLevel": "majority"}
    if not re.search(r"[?&]serverSelectionTimeoutMS=", url, re.IGNORECASE):
        options["serverSelectionTimeoutMS"] = server_selection_timeout_ms
    if not re.search(r"[?&]timeoutMS=", url, re.IGNORECASE):
        options["timeoutMS"] = DEFAULT_TIMEOUT_MS
    return options


async def _create_index(
    db: Any, collection: str, keys: list[tuple[str, Any]], options: dict[str, Any]
) -> None:
    """create_index, with an index of that name or keys but other options or keys (an
    older release's, or made by hand) named with what to do, not a bare code 85/86."""
    try:
        await db[collection].create_index(keys, **options)
    except OperationFailure as exc:
        if exc.code not in INDEX_CONFLICT_CODES:
            raise
        name = options.get("name", "")
        raise StoreUnavailable(
            f"MongoDB index {name!r} of {db.name}.{collection} exists with other keys or "
            f"options than fhir-fusion {__version__} needs "
            f"(keys {[k for k, _ in keys]}); drop it (db.{collection}.dropIndex({name!r}) "
            "in mongosh, as a user allowed to) and start again: it is rebuilt at start-up"
        ) from None


async def _commit(session: Any) -> None:
    """Commit, retrying while the outcome is unknown (the driver's rule: a commit may
    be retried; the server applies it once)."""
    for attempt in range(3):
        try:
            await session.commit_transaction()
            return
        except PyMongoError as exc:
            if not exc.has_error_label("UnknownTransactionCommitResult") or attempt == 2:
                raise


async def _abort_quietly(session: Any) -> None:
    if session.in_transaction:
        try:
            await session.abort_transaction()
        except PyMongoError:
            pass  # the server aborts an abandoned transaction by itself


async def _close_quietly(client: Any) -> None:
    try:
        await client.close()
    except Exception:  # closing a client that never connected must not hide the cause
        pass


def _database_in(url: str) -> str | None:
    path = urlsplit(url).path.lstrip("/")
    return path or None


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    # server selection errors carry the topology description; keep the head only
    return text.split(", Timeout:")[0].split(" (configured timeouts")[0][:300]


__all__ = ["MongoStore", "MongoTransaction", "StoreUnavailable", "describe_address"]
