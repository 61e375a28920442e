"""The mongomock facade (tests/mongo_async.py) answering as a `mongos` router, for the
tests of the store's sharding declarations (tests/test_mongodb_sharding.py).

No sharded cluster runs here, so this checks only what the store *sends*: `hello`
answers msg "isdbgrid" (as mongos does), the admin commands are recorded and answered
{ok: 1}, and config.collections (the cluster's catalogue) is an ordinary mongomock
collection a test may fill to say a collection is sharded already; with
`refuse_catalogue = True` reading it fails with Unauthorized (code 13), as it does
for a user with readWrite on the fhir database only (added for review-mongo #5).
Whether a real
cluster accepts these commands, and moves documents when `pc` changes, is not tested.

Kept in its own module, as subclasses, so that mongo_async.py itself stays as it is.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import OperationFailure

from mongo_async import AsyncMockClient, AsyncMockCollection, AsyncMockDatabase


class AsyncMockMongos(AsyncMockClient):
    def __init__(self) -> None:
        super().__init__()
        self.commands: list[dict[str, Any]] = []  # the admin commands, in order
        self.admin = _RecordingAdmin(self)  # type: ignore[assignment]
        self.refuse_catalogue = False  # config.* reads fail with Unauthorized (docstring)

    def __getitem__(self, name: str) -> AsyncMockDatabase:
        return _Database(self, name)

    def catalogue(self, namespace: str, key: dict[str, Any]) -> None:
        """Record `namespace` as sharded on `key` (what shardCollection leaves behind)."""
        self.sync["config"]["collections"].insert_one({"_id": namespace, "key": key})


class _RecordingAdmin:
    def __init__(self, client: AsyncMockMongos) -> None:
        self._client = client

    async def command(self, command: Any, *_: Any, **__: Any) -> dict[str, Any]:
        self._client.check()
        if command in ("hello", "isMaster", "ismaster"):
            return {"isWritablePrimary": True, "msg": "isdbgrid", "ok": 1.0}
        if not isinstance(command, dict):
            raise NotImplementedError(f"the mongos facade does not answer {command!r}")
        self._client.commands.append(command)
        if "shardCollection" in command:  # the catalogue records it, as a cluster does
            self._client.catalogue(command["shardCollection"], command["key"])
        return {"ok": 1.0}


class _Database(AsyncMockDatabase):
    def __getitem__(self, name: str) -> AsyncMockCollection:
        return _Collection(self, name)


class _Collection(AsyncMockCollection):
    async def find_one(self, *args: Any, **kwargs: Any) -> Any:
        client = self._client
        if self.database.name == "config" and getattr(client, "refuse_catalogue", False):
            raise OperationFailure(
                "not authorized on config to execute command { find: \"collections\" }",
                13, {"codeName": "Unauthorized"},
            )
        return await super().find_one(*args, **kwargs)

    async def drop_index(self, name: str) -> None:
        self._client.check()
        self.sync.drop_index(name)
