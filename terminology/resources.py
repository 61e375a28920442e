"""Terminology resources (CodeSystem, ValueSet, ConceptMap) in the resource store: found
by canonical url (and version), and the CodeSystem kept for each loaded code system."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from search.query import parse_search

if TYPE_CHECKING:
    from fhir_server.storage.base import Context, ResourceStore, StoredResource
    from terminology.model import CodeSystemHeader

_ID_CHARS = re.compile(r"[^A-Za-z0-9\-.]+")


async def find(
    store: ResourceStore, ctx: Context, resource_type: str, url: str, version: str | None = None
) -> list[StoredResource]:
    """The current resources of `resource_type` with this canonical url (and version)."""
    params = [("url", url)]
    if version is not None:
        params.append(("version", version))
    params.append(("_count", "50"))
    page = await store.search(ctx, parse_search(resource_type, params))
    return [r for r in page.resources if r.resource and r.resource.get("url") == url]


def split_canonical(canonical: str) -> tuple[str, str | None]:
    """"url|version" -> (url, version)."""
    url, _, version = canonical.partition("|")
    return url, version or None


def _resource_id(header: CodeSystemHeader) -> str:
    digest = hashlib.sha256(f"{header.url}|{header.version or ''}".encode()).hexdigest()[:10]
    stem = _ID_CHARS.sub("-", f"{header.name}-{header.version or ''}").strip("-")[:50]
    return f"{stem}-{digest}"


def code_system_resource(header: CodeSystemHeader, count: int) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "CodeSystem",
        "url": header.url,
        "name": header.name,
        "status": header.status,
        # the concepts live in the concept store; $lookup/$expand answer from there
        "content": "fragment" if header.content == "fragment" else "not-present",
        "count": count,
    }
    optional = {
        "version": header.version,
        "title": header.title,
        "copyright": header.copyright,
        "language": header.language,
        "hierarchyMeaning": header.hierarchy_meaning,
    }
    resource.update({k: v for k, v in optional.items() if v})
    return resource


async def keep_code_system_resource(
    store: ResourceStore, ctx: Context, header: CodeSystemHeader, count: int
) -> str:
    """Create or update the concept-less CodeSystem standing for a load; its id.

    A CodeSystem with the same url+version that a client stored (any id but the one
    this function gives) is left alone, concepts or not: its id is returned."""
    resource = code_system_resource(header, count)
    resource_id = _resource_id(header)
    for found in await find(store, ctx, "CodeSystem", header.url, header.version):
        body = found.resource or {}
        if (body.get("version") or None) != header.version:
            continue
        if found.id != resource_id:
            return found.id
        async with store.transaction(ctx) as txn:
            await txn.update({**resource, "id": found.id})
        return found.id
    async with store.transaction(ctx) as txn:
        await txn.update({**resource, "id": resource_id})
    return resource_id
