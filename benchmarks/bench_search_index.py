"""The external search index: what the outbox costs a write, how fast the indexer
drains it, and `_text` latency on Elasticsearch beside SQLite FTS5. It is not a test.

    .venv/bin/python benchmarks/bench_search_index.py [--resources 5000]
        [--search-index elasticsearch://127.0.0.1:9200?replicas=0]

Without --search-index it measures only what runs here: writes to a SQLite store
without and with the outbox (one transaction per resource, as REST writes), and FTS5
`_text` queries. With a cluster it also drains the outbox into it (documents per
second) and times the same queries there (the index is refreshed first). Synthetic
resources: Conditions with English, German and Chinese narratives.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhir_server.outbox import Indexer, wait_drained  # noqa: E402
from fhir_server.storage import sqlite_fulltext  # noqa: E402
from fhir_server.storage.base import Context  # noqa: E402
from fhir_server.storage.outbox_sqlite import SQLiteOutbox  # noqa: E402
from fhir_server.storage.sqlite import SQLiteStore  # noqa: E402
from search.elasticsearch_index import ElasticsearchIndex  # noqa: E402
from search.fulltext import text_query  # noqa: E402

TEXTS = [
    ("en", "Essential hypertension, treated with lisinopril; follow-up in {n} weeks"),
    ("de", "Bluthochdruck seit {n} Jahren, Knochenbrüche nach Sturz"),
    ("zh", "患者{n}号，高血压，糖尿病二型"),
]
QUERIES = ["hypertension", "lisinopril follow", "bluthochdruck", "高血压", "asthma,diabetes"]


def _resource(n: int) -> dict[str, Any]:
    lang, text = TEXTS[n % len(TEXTS)]
    return {
        "resourceType": "Condition", "id": f"c{n}", "language": lang,
        "text": {"status": "generated",
                 "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{text.format(n=n)}</div>'},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
        "subject": {"reference": f"Patient/p{n % 500}"},
    }  # fmt: skip


async def _write(path: Path, count: int, outbox: bool) -> tuple[SQLiteStore, float]:
    store = await SQLiteStore.open(path, search_outbox=outbox)
    began = time.perf_counter()
    for n in range(count):
        async with store.transaction(Context()) as txn:
            await txn.update(_resource(n))
    return store, time.perf_counter() - began


def _percentiles(times: list[float]) -> str:
    times.sort()
    return (f"p50 {statistics.median(times):6.2f} ms  "
            f"p95 {times[max(int(len(times) * 0.95) - 1, 0)]:6.2f} ms")  # fmt: skip


async def main(count: int, url: str | None, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plain, plain_s = await _write(Path(tmp) / "plain.db", count, outbox=False)
        await plain.close()
        store, outbox_s = await _write(Path(tmp) / "outbox.db", count, outbox=True)
        print(f"{count} writes, one transaction each: without outbox {count / plain_s:,.0f}/s, "
              f"with outbox {count / outbox_s:,.0f}/s")  # fmt: skip
        for value in QUERIES:
            query = text_query("narrative", value.split(","))
            times = []
            for _ in range(repeat):
                began = time.perf_counter()
                hits = sqlite_fulltext.ranked(store._reader, "default", query, "Condition", 20)
                times.append((time.perf_counter() - began) * 1000)
            print(f"FTS5 _text={value:<20} {_percentiles(times)}  hits {len(hits)}")
        if url is not None:
            index = ElasticsearchIndex.connect(url)
            try:
                await index.check()
                await index.ensure_index("default", recreate=True)
                indexer = Indexer(store, SQLiteOutbox(store), index)
                began = time.perf_counter()
                await wait_drained(indexer, timeout=3600)
                took = time.perf_counter() - began
                print(f"outbox drained into Elasticsearch: {count / took:,.0f} resources/s")
                await index._client.indices.refresh(index="fhir-fusion-default")
                for value in QUERIES:
                    query = text_query("narrative", value.split(","))
                    times = []
                    for _ in range(repeat):
                        began = time.perf_counter()
                        hits = await index.query("default", query, "Condition", 20)
                        times.append((time.perf_counter() - began) * 1000)
                    print(f"ES   _text={value:<20} {_percentiles(times)}  hits {len(hits)}")
            finally:
                await index.close()
        await store.close()


async def cluster_figures(db: Path, url: str, repeat: int, cases: list[Any]) -> None:
    """For bench_search.py --search-index: rebuild the Elasticsearch index from the
    generated store `db` (resources per second), then time its `_text`/`_content`
    cases there, as ElasticsearchIndex.query answers them (ids and scores, 20 hits)."""
    from fhir_server import search_index

    store = await SQLiteStore.open(db)
    index = ElasticsearchIndex.connect(url)
    try:
        await index.check()
        began = time.perf_counter()
        done = await search_index.rebuild(store, index, "default", recreate=True)
        took = time.perf_counter() - began
        print(f"Elasticsearch rebuilt from the store: {done.processed} resources, "
              f"{done.processed / took:,.0f}/s, {done.failed} refused")  # fmt: skip
        await index._client.indices.refresh(index=f"{index.config.prefix}-default")
        for label, rtype, params in cases:
            items = params.items() if isinstance(params, dict) else params
            texts = [(k, v) for k, v in items if k in ("_text", "_content")]
            if not texts:
                continue
            field = "narrative" if texts[0][0] == "_text" else "content"
            query = text_query(field, texts[0][1].split(","))
            times = []
            for _ in range(repeat):
                began = time.perf_counter()
                hits = await index.query("default", query, rtype, 20)
                times.append((time.perf_counter() - began) * 1000)
            print(f"Elasticsearch {label:<30} {_percentiles(times)}  hits {len(hits)}")
    finally:
        await index.close()
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=5000)
    parser.add_argument("--search-index", default=None, metavar="URL")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.resources, args.search_index, args.repeat))
