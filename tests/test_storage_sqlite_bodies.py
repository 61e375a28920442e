"""The SQLite store keeps each version's body once: the current one in `resources`,
superseded ones in `versions` (fhir_server/storage/sqlite.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

CTX = Context()


def _patient(family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "id": "p1", "name": [{"family": family}]}


def test_each_version_body_is_stored_once_and_read_back(tmp_path: Path) -> None:
    asyncio.run(_bodies(tmp_path))


async def _bodies(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "bodies.db")
    try:
        for family in ("Chalmers", "Windsor", "Ng"):
            async with store.transaction(CTX) as txn:
                await txn.update(_patient(family))
        conn = store._writer
        rows = conn.execute(
            "SELECT version, body IS NULL FROM versions WHERE id = 'p1' ORDER BY version"
        ).fetchall()
        assert rows == [(1, 0), (2, 0), (3, 1)]  # the current body lives in resources only
        for version, family in ((1, "Chalmers"), (2, "Windsor"), (3, "Ng")):
            found = await store.vread(CTX, "Patient", "p1", version)
            assert found is not None
            assert json.loads(found.body)["name"] == [{"family": family}]
        history, total = await store.history(CTX, "Patient", "p1")
        assert total == 3
        assert [json.loads(v.body)["name"][0]["family"] for v in history] == [
            "Ng", "Windsor", "Chalmers"
        ]

        async with store.transaction(CTX) as txn:
            await txn.delete("Patient", "p1")
        rows = conn.execute(
            "SELECT version, deleted, body IS NULL FROM versions WHERE id = 'p1' ORDER BY version"
        ).fetchall()
        assert rows == [(1, 0, 0), (2, 0, 0), (3, 0, 0), (4, 1, 1)]
        found = await store.vread(CTX, "Patient", "p1", 3)
        assert found is not None and json.loads(found.body)["name"] == [{"family": "Ng"}]
        deleted = await store.vread(CTX, "Patient", "p1", 4)
        assert deleted is not None and deleted.deleted and deleted.body is None

        async with store.transaction(CTX) as txn:  # recreated after the delete
            await txn.update(_patient("Okafor"))
        history, total = await store.history(CTX, "Patient", "p1")
        assert total == 5
        assert history[0].version == 5 and json.loads(history[0].body)["name"] == [
            {"family": "Okafor"}
        ]
        assert history[1].deleted and history[1].body is None
    finally:
        await store.close()
