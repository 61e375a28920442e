"""A tiny Elasticsearch stand-in for CI, where no Elasticsearch server can run: a real
HTTP/1.1 server on 127.0.0.1 (ephemeral port) that the real `AsyncElasticsearch` client
talks to, so the client's wire format (paths, query strings, headers, NDJSON bulk
bodies) is exercised, not a mock object.

It records every request, answers with Elasticsearch-shaped JSON, and keeps just enough
state to check consistency: indices with their create bodies, and documents with
external versions (a bulk `index`/`delete` with a version not above the stored one gets
409, as Elasticsearch answers). Searches are not evaluated: the test sets the hits.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ES_VERSION = "9.1.0"


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def ndjson(self) -> list[Any]:
        return [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]


@dataclass
class FakeElasticsearch:
    plugins: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    indices: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> create body
    docs: dict[tuple[str, str], tuple[int, dict[str, Any] | None]] = field(default_factory=dict)
    search_hits: list[dict[str, Any]] = field(default_factory=list)
    fail_ids: set[str] = field(default_factory=set)  # bulk items answered 503
    hold_bulk: asyncio.Event | None = None  # when set: a bulk waits for it before applying
    bulk_started: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"elasticsearch://127.0.0.1:{self.port}?replicas=0"

    async def start(self) -> FakeElasticsearch:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def live(self) -> dict[str, int]:
        """Documents present (not deleted): "Type/id" -> version."""
        return {doc_id: v for (_, doc_id), (v, body) in self.docs.items() if body is not None}

    def of(self, method: str, suffix: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    # -- HTTP ---------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                parts = urlsplit(target)
                params = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                request = Request(method, unquote(parts.path), params, headers, body)
                self.requests.append(request)
                status, answer = await self._answer(request)
                payload = b"" if method == "HEAD" else json.dumps(answer).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\n"
                    "X-Elastic-Product: Elasticsearch\r\n"
                    "Content-Type: application/vnd.elasticsearch+json;compatible-with=9\r\n"
                    f"Content-Length: {len(json.dumps(answer).encode())}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, request: Request) -> tuple[int, Any]:
        path = request.path.strip("/")
        method = request.method
        if path == "":
            return 200, {"name": "fake", "cluster_name": "fake", "version": {
                "number": ES_VERSION, "build_flavor": "default"}, "tagline": "You Know, for Search"}
        if path == "_cat/plugins":
            return 200, [{"name": "node-1", "component": c, "version": ES_VERSION}
                         for c in self.plugins]  # fmt: skip
        if path == "_bulk":
            return 200, await self._bulk(request)
        head, _, rest = path.partition("/")
        if rest == "_search":
            if head not in self.indices:
                return 404, _error("index_not_found_exception", 404)
            return 200, {"took": 1, "timed_out": False, "hits": {"hits": self.search_hits}}
        if rest == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if rest == "_mapping":
            return 200, {head: {"mappings": self.indices[head]["mappings"]}}
        if rest.startswith("_doc/"):
            doc_id = rest.removeprefix("_doc/")
            found = self.docs.pop((head, doc_id), None)
            return (200 if found else 404), {"result": "deleted" if found else "not_found"}
        if method == "HEAD":
            return (200 if head in self.indices else 404), {}
        if method == "PUT":
            if head in self.indices:
                return 400, _error("resource_already_exists_exception", 400)
            self.indices[head] = request.json()
            return 200, {"acknowledged": True, "index": head}
        if method == "DELETE":
            self.indices.pop(head, None)
            for key in [k for k in self.docs if k[0] == head]:
                del self.docs[key]
            return 200, {"acknowledged": True}
        return 400, _error("unknown_request", 400)

    async def _bulk(self, request: Request) -> dict[str, Any]:
        self.bulk_started.set()
        if self.hold_bulk is not None:
            await self.hold_bulk.wait()
        lines = request.ndjson()
        items: list[dict[str, Any]] = []
        i = 0
        while i < len(lines):
            action, target = next(iter(lines[i].items()))
            body = lines[i + 1] if action == "index" else None
            i += 2 if action == "index" else 1
            key = (target["_index"], target["_id"])
            version = int(target["version"])
            current = self.docs.get(key)
            if target["_id"] in self.fail_ids:
                items.append({action: {"status": 503, "error": {"type": "unavailable_shards_exception"}}})
            elif current is not None and current[0] >= version:
                items.append({action: {"status": 409, "error": {
                    "type": "version_conflict_engine_exception"}}})  # fmt: skip
            elif action == "delete" and (current is None or current[1] is None):
                self.docs[key] = (version, None)
                items.append({action: {"status": 404, "result": "not_found"}})
            else:
                self.docs[key] = (version, body)
                items.append({action: {"status": 201 if current is None else 200,
                                       "_version": version}})  # fmt: skip
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        return {"took": 1, "errors": errors, "items": items}


def _error(kind: str, status: int) -> dict[str, Any]:
    return {"error": {"type": kind, "reason": kind, "root_cause": []}, "status": status}
