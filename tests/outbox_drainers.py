"""Helpers for the tests of several indexers draining one outbox (tests/test_outbox_lease.py):
a search index that records every change it is given, and, run as a script, a separate
process draining a SQLite file's outbox into such an index.

    python tests/outbox_drainers.py DB_FILE LOG_FILE

opens the store, prints "ready", waits for a line on stdin (so that the test starts
several such processes at the same moment), then drains until the outbox stays empty
for a moment, appending one line per delivered change ("<tenant> <type>/<id>
<version>") to LOG_FILE.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

if __name__ == "__main__":  # run as a script: the repository's packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.fulltext import Change


class RecordingIndex:
    """The `apply` of search.fulltext.FullTextIndex, recording each change delivered.
    `delay` makes each bulk call take a while (a real index answers over the network),
    so concurrent indexers overlap; `gate`, when set, holds every call until it opens."""

    def __init__(self, log: Path | None = None, delay: float = 0.0) -> None:
        self.delivered: list[tuple[str, str, int]] = []
        self._log = log
        self.delay = delay
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def apply(self, tenant: str, changes: Sequence[Change]) -> list[str | None]:
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        for change in changes:
            key = f"{change.resource_type}/{change.id}"
            self.delivered.append((tenant, key, change.version))
            if self._log is not None:
                with self._log.open("a", encoding="utf-8") as out:
                    out.write(f"{tenant} {key} {change.version}\n")
        return [None] * len(changes)

    async def close(self) -> None:
        return None


async def _drain_file(db: Path, log: Path) -> None:
    from fhir_server.outbox import Indexer
    from fhir_server.storage.outbox_sqlite import SQLiteOutbox
    from fhir_server.storage.sqlite import SQLiteStore

    store = await SQLiteStore.open(db)
    try:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        indexer = Indexer(store, SQLiteOutbox(store), RecordingIndex(log, delay=0.01),
                          batch_size=7)  # fmt: skip
        idle = 0
        while idle < 20:  # stop once nothing has been due for a while
            idle = 0 if await indexer.drain_once() else idle + 1
            await asyncio.sleep(0.01)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(_drain_file(Path(sys.argv[1]), Path(sys.argv[2])))
