"""Loading feed files offline (`fhir-fusion ingest hl7v2 PATH...`).

An HL7v2 file may hold one message or many: a new message starts at every MSH at the
start of a segment; segments may end with CR, LF or CRLF, and the file may start with a
UTF-8 byte order mark. Each message goes through the pipeline on its own, so one bad
message is kept as rejected and the rest of the file still loads.

Messages are stored in batches of `BATCH_SIZE` per commit (each still its own
transaction inside the batch): a file load acknowledges nothing before it ends, and
one commit for many messages writes the index pages they share once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from adapters.pipeline import IngestResult, Pipeline
from fhir_server.storage.base import Context


@dataclass
class IngestSummary:
    files: int = 0
    messages: int = 0
    stored: int = 0
    duplicate: int = 0
    rejected: int = 0
    unreadable: list[str] = field(default_factory=list)
    rejections: list[tuple[str, int | None, str]] = field(default_factory=list)

    def add(self, path: Path, result: IngestResult) -> None:
        self.messages += 1
        if result.status == "stored":
            self.stored += 1
        elif result.status == "duplicate":
            self.duplicate += 1
        else:
            self.rejected += 1
            self.rejections.append((str(path), result.input_id, result.reason or ""))

    def __str__(self) -> str:
        lines = [f"{self.files} files, {self.messages} messages: {self.stored} stored, "
                 f"{self.duplicate} duplicate, {self.rejected} rejected"]
        lines += [f"  rejected: {p} (input {i}): {reason}" for p, i, reason in self.rejections]
        lines += [f"  unreadable: {p}" for p in self.unreadable]
        return "\n".join(lines)


def split_file(data: bytes, feed: str = "hl7v2") -> list[bytes]:
    """The inputs a file holds, each as the bytes the pipeline receives."""
    if feed != "hl7v2":
        return [data]
    from adapters.hl7v2.message import split_message_bytes

    # each message in the bytes it came in: its MSH-18 says how to decode them
    return split_message_bytes(data)


BATCH_SIZE = 100


async def ingest_files(pipeline: Pipeline, ctx: Context, paths: Iterable[Path | str],
                       feed: str = "hl7v2") -> IngestSummary:
    summary = IngestSummary()
    batch: list[tuple[Path, bytes]] = []
    for file, message in _messages(paths, feed, summary):
        batch.append((file, message))
        if len(batch) >= BATCH_SIZE:
            await _ingest_batch(pipeline, ctx, feed, batch, summary)
            batch = []
    await _ingest_batch(pipeline, ctx, feed, batch, summary)
    return summary


async def _ingest_batch(pipeline: Pipeline, ctx: Context, feed: str,
                        batch: list[tuple[Path, bytes]], summary: IngestSummary) -> None:
    if not batch:
        return
    results = []
    async with pipeline.store.batch(ctx):
        for file, message in batch:
            results.append((file, await pipeline.ingest(ctx, feed, message)))
    # counted only once the batch is committed
    for file, result in results:
        summary.add(file, result)


def _messages(paths: Iterable[Path | str], feed: str,
              summary: IngestSummary) -> Iterator[tuple[Path, bytes]]:
    for path in (Path(p) for p in paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            try:
                data = file.read_bytes()
            except OSError as exc:
                summary.unreadable.append(f"{file} ({exc.strerror or exc})")
                continue
            summary.files += 1
            for message in split_file(data, feed):
                yield file, message
