"""A MongoDB search index for the search tests, on mongomock (no MongoDB server can run
here): documents are written as fhir_server/storage/mongodb_search.py's contract says,
searches come out as ids, like tests/search_index_db.py does for SQLite.

mongomock goes behind tests/mongo_async.py, the async facade of the store's tests. With
FHIR_FUSION_TEST_MONGODB set to a MongoDB URL, a real AsyncMongoClient database is
used instead (a fresh one per MongoSearchDB, dropped by `close`).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from bson import Binary
from mongo_async import AsyncMockClient

from fhir_server import jsonutil
from fhir_server.storage import mongodb_search
from fhir_server.storage.base import Context, SearchPage
from search.query import SearchQuery, parse_search

T = TypeVar("T")
REAL_MONGODB = os.environ.get("FHIR_FUSION_TEST_MONGODB")


def open_database() -> tuple[Any, Any]:
    """(database, client): mongomock behind tests/mongo_async.py, or a fresh database on
    the real server FHIR_FUSION_TEST_MONGODB names."""
    if REAL_MONGODB:
        from pymongo import AsyncMongoClient

        client: Any = AsyncMongoClient(REAL_MONGODB)
        return client[f"fhir_fusion_test_{uuid.uuid4().hex[:12]}"], client
    client = AsyncMockClient()
    return client["fhir"], client


def document(
    resource: dict[str, Any],
    last_updated: str = "2026-12-04T16:40:00.000000+00:00",
    tenant: str = "default",
    version: int = 1,
) -> dict[str, Any]:
    """The current-resource document the store writes for `resource` (its _id, an
    ObjectId, is made by the insert)."""
    return {
        "tenant": tenant,
        "type": resource["resourceType"],
        "id": resource["id"],
        "version": version,
        "lastUpdated": last_updated,
        "deleted": False,
        "body": Binary(jsonutil.dumps(resource)),
        mongodb_search.INDEX_FIELD: mongodb_search.index_entries(resource),
    }


@dataclass(frozen=True)
class Page:
    rids: list[str]  # the ids: what stands for SQLite's rids in the tests
    total: int | None
    next_cursor: str | None


class MongoSearchDB:
    """Resources in, ids out: the MongoDB twin of tests/search_index_db.SearchDB."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.db, self.client = open_database()
        self.ctx = Context()
        self.run(mongodb_search.create_indexes(self.db))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        if REAL_MONGODB:
            self.run(self.client.drop_database(self.db.name))
        self.run(self.client.close())
        self.loop.close()

    @property
    def collection(self) -> Any:
        return self.db[mongodb_search.COLLECTION]

    def add(
        self, resource: dict[str, Any], last_updated: str = "2026-12-04T16:40:00.000000+00:00"
    ) -> None:
        self.run(self.collection.insert_one(document(resource, last_updated)))

    def add_json(self, resource: dict[str, Any], **kwargs: Any) -> None:
        """Store a resource written with floats: via JSON text, so numbers become Decimal."""
        self.add(jsonutil.loads(json.dumps(resource).encode()), **kwargs)

    def delete(self, resource_type: str, resource_id: str) -> None:
        """Turn the document into a delete marker, as the store does."""
        where = {"tenant": self.ctx.tenant, "type": resource_type, "id": resource_id}
        change = {"$set": {"deleted": True, "body": None, mongodb_search.INDEX_FIELD: []}}
        self.run(self.collection.update_one(where, change))

    def search_page(self, query: SearchQuery) -> SearchPage:
        return self.run(mongodb_search.search(self.db, self.ctx, query))

    def page(self, query: SearchQuery) -> Page:
        """The page as SearchDB.page gives it, with ids in place of rids."""
        found = self.search_page(query)
        ids = [
            stored.id if stored.container is None else f"{stored.container[1]}#{stored.id}"
            for stored in found.resources
        ]  # a contained resource's as SearchDB gives it: "<container id>#<local id>"
        return Page(ids, found.total, found.next_cursor)

    def ids_of(self, rids: list[str]) -> list[str]:
        return rids

    def search(self, resource_type: str | None, params: list[tuple[str, str]]) -> list[str]:
        """The ids found, in result order (all of them: _count 1000 unless given)."""
        if not any(name == "_count" for name, _ in params):
            params = [*params, ("_count", "1000")]
        return self.page(parse_search(resource_type, params)).rids

    def found(self, resource_type: str | None, query: str) -> set[str]:
        from tests.search_index_db import parse_qs

        return set(self.search(resource_type, parse_qs(query)))

    def count(self) -> int:
        return self.run(self.collection.count_documents({}))
