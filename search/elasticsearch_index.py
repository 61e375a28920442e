"""search.fulltext.FullTextIndex on Elasticsearch, through the official async client
(`elasticsearch.AsyncElasticsearch`).

Selected by a URL: `elasticsearch://host:9200` (HTTP), `elasticsearch+https://host:9200`
or plain `http(s)://...`; user and password in the URL are sent as basic auth; the
query parameter `prefix` names the indices (default `fhir-fusion`), `replicas` their
replica count (default 1; 0 for a single node).

One index per tenant, `<prefix>-<tenant>`: tenants never share a query, a tenant's
data is dropped by dropping its index, and a tenant's mapping (its Chinese analyzer)
is its own. What it costs: each index has at least one shard, so thousands of small
tenants would want a shared index with a `tenant` field and routing instead; a
regional network has tens of tenants (hospitals), for which an index each is right.
Tenant names are lowercased and cut to [a-z0-9_-] (with a hash of the original when
that changed them, so two tenants never share an index).

Documents: `_id` "Type/id", written with `version_type=external` and the resource's
version, so Elasticsearch itself keeps the highest version: replaying a change (the
outbox delivers at least once) or delivering an old one late changes nothing, and the
409 it answers counts as applied. Deletes carry the delete's version the same way.

Server versions: the 9.x client sends `Accept: application/vnd.elasticsearch+json;
compatible-with=9`, which Elasticsearch 9.x accepts (deploy/ runs 9.x). An 8.x server
refuses it (400 "Accept version must be either version 8 or 7"): use it with the 8.x
client (`elasticsearch>=8,<9`), whose API this module keeps to.

Indexing is near real time: a change becomes searchable at the next refresh (one
second by default), unless the index is opened with `refresh=True` (tests).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from elasticsearch import ApiError, AsyncElasticsearch, TransportError

from search import es_mappings, es_query
from search.fulltext import Change, Hit, TextQuery

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "fhir-fusion"
_SCHEMES = {"elasticsearch": "http", "elasticsearch+http": "http", "http": "http",
            "elasticsearch+https": "https", "https": "https"}  # fmt: skip
_UNSAFE = re.compile(r"[^a-z0-9_-]")


class SearchIndexError(RuntimeError):
    """The search index cannot be used; the message names the cluster, never patient data."""


@dataclass(frozen=True)
class ElasticsearchConfig:
    url: str  # http(s)://host:port, without credentials
    prefix: str = DEFAULT_PREFIX
    replicas: int = 1
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> ElasticsearchConfig:
        parts = urlsplit(text)
        scheme = _SCHEMES.get(parts.scheme)
        if scheme is None or not parts.hostname:
            raise ValueError(
                f"{parts.scheme or '(none)'}: is not an Elasticsearch URL; "
                "expected elasticsearch://host:port"
            )
        query = parse_qs(parts.query)
        prefix = query.get("prefix", [DEFAULT_PREFIX])[0]
        if not prefix or _UNSAFE.search(prefix) or prefix[0] in "-_":
            raise ValueError(f"index prefix {prefix!r} must be lowercase letters, digits, - or _")
        replicas_text = query.get("replicas", ["1"])[0]
        if not replicas_text.isdigit():
            raise ValueError(f"replicas={replicas_text!r} is not a whole number")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        port = parts.port or 9200
        return cls(
            f"{scheme}://{host}:{port}",
            prefix,
            int(replicas_text),
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )


def index_name(prefix: str, tenant: str) -> str:
    """The index of `tenant`: lowercase [a-z0-9_-]; a hash is appended when the tenant
    name had to change, so distinct tenants get distinct indices."""
    safe = _UNSAFE.sub("_", tenant.lower())
    if safe != tenant or not safe:
        safe = f"{safe[:40]}-{hashlib.sha256(tenant.encode()).hexdigest()[:10]}"
    return f"{prefix}-{safe}"


def _doc_id(resource_type: str, resource_id: str) -> str:
    return f"{resource_type}/{resource_id}"


class ElasticsearchIndex:
    """The full-text index of every tenant on one Elasticsearch cluster."""

    def __init__(
        self,
        client: AsyncElasticsearch,
        config: ElasticsearchConfig,
        *,
        refresh: bool = False,
    ) -> None:
        self._client = client
        self._config = config
        self._refresh = refresh
        self._plugin: str | None = None
        self._plugins_checked = False
        self._indices: dict[str, str | None] = {}  # index name -> its Chinese plugin

    @classmethod
    def connect(
        cls, url: str, *, refresh: bool = False, request_timeout: float = 30.0
    ) -> ElasticsearchIndex:
        """An index on the cluster at `url` (no request is made yet). The client does
        not retry: the outbox does, with its own backoff."""
        config = ElasticsearchConfig.parse(url)
        auth = (config.username, config.password or "") if config.username else None
        client = AsyncElasticsearch(
            config.url, basic_auth=auth, max_retries=0, request_timeout=request_timeout
        )
        return cls(client, config, refresh=refresh)

    @property
    def config(self) -> ElasticsearchConfig:
        return self._config

    async def close(self) -> None:
        await self._client.close()

    # -- start-up -------------------------------------------------------------------

    async def chinese_plugin(self) -> str | None:
        """The Chinese analysis plugin installed on the cluster (asked once)."""
        if not self._plugins_checked:
            components: list[str] = []
            try:
                rows = await self._client.cat.plugins(format="json")
                components = [str(row.get("component", "")) for row in rows.body]
            except ApiError as exc:  # e.g. 403 without the monitor privilege
                logger.warning(
                    "cannot list Elasticsearch plugins (status %s); Chinese text gets n-grams",
                    exc.meta.status,
                )
            self._plugin = es_mappings.chinese_plugin(components)
            self._plugins_checked = True
        return self._plugin

    async def check(self) -> None:
        """Reach the cluster (serve calls this at start-up); SearchIndexError otherwise."""
        try:
            await self._client.info()
        except (TransportError, ApiError) as exc:
            raise SearchIndexError(
                f"Elasticsearch at {self._config.url} cannot be reached: {type(exc).__name__}"
            ) from None
        await self.chinese_plugin()

    async def ensure_index(self, tenant: str, *, recreate: bool = False) -> str:
        """The tenant's index, created with the current mappings when missing (or, with
        `recreate`, dropped and created again)."""
        name = index_name(self._config.prefix, tenant)
        if name in self._indices and not recreate:
            return name
        if recreate:
            await self._client.indices.delete(index=name, ignore_unavailable=True)
        exists = await self._client.indices.exists(index=name)
        if exists:
            mapping = await self._client.indices.get_mapping(index=name)
            meta = (mapping.body.get(name, {}).get("mappings", {}).get("_meta") or {})
            self._indices[name] = meta.get("chinese_plugin")
            return name
        plugin = await self.chinese_plugin()
        body = es_mappings.index_body(plugin, replicas=self._config.replicas)
        try:
            await self._client.indices.create(
                index=name, settings=body["settings"], mappings=body["mappings"]
            )
        except ApiError as exc:
            if exc.error != "resource_already_exists_exception":  # another worker won
                raise
        self._indices[name] = plugin
        return name

    # -- writes ---------------------------------------------------------------------

    async def apply(self, tenant: str, changes: Sequence[Change]) -> list[str | None]:
        """One bulk request for `changes` (external versions, see the module doc)."""
        if not changes:
            return []
        name = await self.ensure_index(tenant)
        plugin = self._indices[name]
        operations: list[dict[str, Any]] = []
        for change in changes:
            target = {
                "_index": name,
                "_id": _doc_id(change.resource_type, change.id),
                "version": change.version,
                "version_type": "external",
            }
            if change.resource is None:
                operations.append({"delete": target})
            else:
                operations.append({"index": target})
                operations.append(es_mappings.document(change.resource, plugin))
        response = await self._client.bulk(operations=operations, **self._refresh_param())
        return [_item_result(item) for item in response.body["items"]]

    async def index(self, tenant: str, resource: dict[str, Any]) -> None:
        version = int((resource.get("meta") or {}).get("versionId", 1))
        change = Change(resource["resourceType"], resource["id"], version, resource)
        (failed,) = await self.apply(tenant, [change])
        if failed is not None:
            raise SearchIndexError(f"Elasticsearch refused the document: {failed}")

    async def remove(self, tenant: str, resource_type: str, resource_id: str) -> None:
        """Drop the document whatever its version (`apply` with the delete's version is
        what the outbox uses)."""
        name = await self.ensure_index(tenant)
        await self._client.options(ignore_status=404).delete(
            index=name,
            id=_doc_id(resource_type, resource_id),
            **self._refresh_param(),
        )

    def _refresh_param(self) -> dict[str, Any]:
        # wait_for: the change is searchable when the call returns (tests); otherwise
        # the parameter is left out and the index refreshes on its own schedule
        return {"refresh": "wait_for"} if self._refresh else {}

    # -- reads ----------------------------------------------------------------------

    async def query(
        self,
        tenant: str,
        text: TextQuery,
        resource_type: str | None = None,
        limit: int = 100,
    ) -> list[Hit]:
        body = es_query.search_body(text, resource_type, limit)
        if body is None:
            return []
        name = index_name(self._config.prefix, tenant)
        response = await self._client.options(ignore_status=404).search(
            index=name,
            query=body["query"],
            size=body["size"],
            sort=body["sort"],
            source=body["_source"],
            track_total_hits=body["track_total_hits"],
        )
        if response.meta.status == 404:  # the tenant has never indexed anything
            return []
        return [
            Hit(
                hit["_source"]["resourceType"],
                hit["_source"]["id"],
                float(hit["sort"][0] if hit.get("sort") else hit.get("_score") or 0.0),
            )
            for hit in response.body["hits"]["hits"]
        ]


def _item_result(item: dict[str, Any]) -> str | None:
    """None when a bulk item was applied, or needs nothing (409: the index already has
    this version or a newer one; 404 on delete: nothing to delete); else why not."""
    action, outcome = next(iter(item.items()))
    status = int(outcome.get("status", 500))
    if status < 300 or status == 409 or (action == "delete" and status == 404):
        return None
    error = outcome.get("error")
    kind = error.get("type", "error") if isinstance(error, dict) else "error"
    # the error's reason may quote document text: only its type is kept
    return f"{action} {status} {kind}"
