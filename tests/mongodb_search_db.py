"""A MongoDB search index for the search tests, on mongomock (no MongoDB server can run
here): documents are written as fhir_server/storage/mongodb_search.py's contract says,
searches come out as ids, like tests/search_index_db.py does for SQLite.

`AsyncFacade` gives mongomock the shape of PyMongo's asyncio API that mongodb_search
uses (find(...).to_list, await aggregate(...), await count_documents(...)). With
FHIR_FUSION_TEST_MONGODB set to a MongoDB URL, `open_db` returns a real
AsyncMongoClient database instead (a fresh database per call, dropped by `close`).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import mongomock

from fhir_server import jsonutil
from fhir_server.storage import mongodb_search
from fhir_server.storage.base import Context, SearchPage
from search.query import SearchQuery, parse_search

T = TypeVar("T")
REAL_MONGODB = os.environ.get("FHIR_FUSION_TEST_MONGODB")


class _Cursor:
    def __init__(self, docs: Any) -> None:
        self._docs = docs

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        docs = list(self._docs)
        return docs if length is None else docs[:length]


class _Collection:
    """The subset of pymongo.asynchronous.collection.AsyncCollection used by the search."""

    def __init__(self, collection: mongomock.Collection) -> None:
        self.sync = collection

    def find(self, filter: Any = None, projection: Any = None, *, session: Any = None,
             **kwargs: Any) -> _Cursor:  # fmt: skip
        return _Cursor(self.sync.find(filter, projection, **kwargs))

    async def aggregate(self, pipeline: list[Any], session: Any = None) -> _Cursor:
        return _Cursor(self.sync.aggregate(pipeline))

    async def count_documents(self, filter: Any, session: Any = None) -> int:
        return int(self.sync.count_documents(filter))

    async def create_indexes(self, indexes: list[Any]) -> list[str]:
        return list(self.sync.create_indexes(indexes))

    async def insert_one(self, doc: dict[str, Any]) -> Any:
        return self.sync.insert_one(doc)

    async def delete_many(self, filter: Any) -> Any:
        return self.sync.delete_many(filter)


class AsyncFacade:
    """A mongomock database behind PyMongo's async method shapes."""

    def __init__(self) -> None:
        self.sync = mongomock.MongoClient().get_database("fhir")

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self.sync[name])


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def document(
    resource: dict[str, Any],
    last_updated: str = "2026-12-04T16:40:00.000000+00:00",
    tenant: str = "default",
    version: int = 1,
) -> dict[str, Any]:
    """The current-resource document the store writes for `resource`."""
    return {
        "tenant": tenant,
        "type": resource["resourceType"],
        "id": resource["id"],
        "version": version,
        "lastUpdated": last_updated,
        "deleted": False,
        "body": jsonutil.dumps(resource),
        mongodb_search.INDEX_FIELD: mongodb_search.index_entries(resource),
    }


class MongoSearchDB:
    """Resources in, ids out: the MongoDB twin of tests/search_index_db.SearchDB."""

    def __init__(self, db: Any = None) -> None:
        self.db = db if db is not None else AsyncFacade()
        self.ctx = Context()
        run(mongodb_search.create_indexes(self.db))

    @property
    def collection(self) -> Any:
        return self.db[mongodb_search.COLLECTION]

    def add(
        self, resource: dict[str, Any], last_updated: str = "2026-12-04T16:40:00.000000+00:00"
    ) -> None:
        run(self.collection.insert_one(document(resource, last_updated)))

    def add_json(self, resource: dict[str, Any], **kwargs: Any) -> None:
        """Store a resource written with floats: via JSON text, so numbers become Decimal."""
        self.add(jsonutil.loads(json.dumps(resource).encode()), **kwargs)

    def page(self, query: SearchQuery) -> SearchPage:
        return run(mongodb_search.search(self.db, self.ctx, query))

    def search(self, resource_type: str | None, params: list[tuple[str, str]]) -> list[str]:
        """The ids found, in result order (all of them: _count 1000 unless given)."""
        if not any(name == "_count" for name, _ in params):
            params = [*params, ("_count", "1000")]
        return [found.id for found in self.page(parse_search(resource_type, params)).resources]

    def found(self, resource_type: str | None, query: str) -> set[str]:
        from tests.search_index_db import parse_qs

        return set(self.search(resource_type, parse_qs(query)))

    def count(self) -> int:
        return run(self.collection.count_documents({}))


def fresh_database_name() -> str:
    return f"fhir_fusion_test_{uuid.uuid4().hex[:12]}"
