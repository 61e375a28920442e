"""Keeping search.custom.REGISTRY in step with the SearchParameters of a MongoDB store
that several API workers share (break-new finding 7).

The registry is per process. On SQLite the store compares a change marker in the file
before each search and inside each write transaction (sqlite_reindex.sync_registry), so
two processes on one file never disagree. On MongoDB each worker instead reads, every
REFRESH_SECONDS, the versions of the stored SearchParameters and the versions recorded
as indexed, and reloads its registry when they changed. So for up to REFRESH_SECONDS
after a SearchParameter is written (or a reindex completes) on one worker, another may
still ignore it: its searches treat the code as unknown (a 400 under
`Prefer: handling=strict`) and its writes are indexed without the new parameter. A
`$reindex` started after that interval covers those writes; the README says to wait
for it after writing a SearchParameter.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0


async def _fingerprint(db: Any) -> tuple[Any, ...]:
    from fhir_server.storage import mongodb_documents as docs
    from fhir_server.storage.mongodb_reindex import indexed_versions

    found = db[docs.RESOURCES].find(
        {"type": "SearchParameter", "deleted": False}, {"version": 1}, sort=[("_id", 1)]
    )
    stored = tuple((str(doc["_id"]), doc.get("version")) for doc in await found.to_list(None))
    return stored, tuple(sorted((await indexed_versions(db)).items()))


async def keep_fresh(store: Any, interval: float | None = None) -> None:
    """Run until cancelled: reload the registry of a MongoDB store's worker when the
    stored SearchParameters or their indexed versions changed. Returns at once for
    other stores (SQLite keeps itself in step)."""
    from fhir_server.storage.mongodb import MongoStore, _load_search_parameters

    if not isinstance(store, MongoStore):
        return
    db = store.db
    seen = None
    while True:
        try:
            now = await _fingerprint(db)
            if now != seen:  # the first time too: changes since the store opened
                await _load_search_parameters(db)
                if seen is not None:
                    logger.info("custom SearchParameters reloaded (changed by another worker)")
            seen = now
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - try again at the next interval
            logger.warning("custom SearchParameters not refreshed: %s", type(exc).__name__)
        await asyncio.sleep(REFRESH_SECONDS if interval is None else interval)
