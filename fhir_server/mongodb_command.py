"""`fhir-fusion mongodb shard`: the operator's one-off step that declares the MongoDB
store's shard keys through a `mongos` router (fhir_server/storage/mongodb_sharding.py).

It needs a user with the clusterManager role (enableSharding / shardCollection) and
read access to the cluster catalogue; `serve` then runs with a readWrite-only user. It
is idempotent: run again, it reports the collections already sharded and changes
nothing; a collection sharded on another key stops it with a message naming both keys.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import pymongo

from fhir_server.config import resolve_setting


class ShardCommandError(Exception):
    """The command cannot go on; the message says why, for the operator."""


# shardCollection on a big existing collection can take long on the server
SHARD_TIMEOUT_S = 3600.0


def add_mongodb_command(commands: Any) -> None:
    """Register `mongodb shard` on the CLI's subcommands."""
    parser = commands.add_parser("mongodb", help="MongoDB operator steps (shard keys)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    shard = actions.add_parser(
        "shard",
        help="declare the shard keys through mongos (once, as a clusterManager user)",
    )
    shard.add_argument(
        "--store", default=None, metavar="URL",
        help="mongodb:// URL of a mongos router (env FHIR_FUSION_STORE)",
    )  # fmt: skip
    parser.set_defaults(command="mongodb", run=run)


def run(args: argparse.Namespace) -> int:
    from fhir_server.cli import CommandError

    url = resolve_setting("store", args.store)
    try:
        for namespace, outcome in asyncio.run(shard(url)):
            print(f"{namespace}: {outcome}")
    except ShardCommandError as exc:
        raise CommandError(str(exc)) from None
    return 0


async def open_store(url: str) -> Any:
    """The MongoDB store at `url` (tests replace this to hand in a facade client)."""
    from fhir_server.storage.mongodb import MongoStore

    return await MongoStore.open(url)


async def shard(url: str | None) -> list[tuple[str, str]]:
    """Declare the shard keys of the store at `url`: (namespace, outcome) per collection."""
    from fhir_server.storage import mongodb_sharding
    from fhir_server.storage.mongodb import StoreUnavailable, describe_address

    if not url or not url.startswith(("mongodb://", "mongodb+srv://")):
        raise ShardCommandError(
            "mongodb shard needs the MongoDB URL of a mongos router: --store mongodb://... "
            "or FHIR_FUSION_STORE"
        )
    try:
        store = await open_store(url)
    except StoreUnavailable as exc:
        raise ShardCommandError(str(exc)) from None
    try:
        if not store.sharded:
            raise ShardCommandError(
                f"MongoDB at {describe_address(url)} is not a sharded cluster (its hello "
                "does not come from a mongos router): nothing to shard"
            )
        try:
            with pymongo.timeout(SHARD_TIMEOUT_S):
                return await mongodb_sharding.declare(store.client, store.db)
        except StoreUnavailable as exc:
            raise ShardCommandError(str(exc)) from None
        except pymongo.errors.PyMongoError as exc:
            code = getattr(exc, "code", None)
            hint = " (the user needs the clusterManager role)" if code == 13 else ""
            raise ShardCommandError(
                f"MongoDB at {describe_address(url)} refused to shard: "
                f"{type(exc).__name__} code {code}{hint}"
            ) from None
    finally:
        await store.close()
