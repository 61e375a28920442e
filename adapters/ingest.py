"""Loading feed files offline (`fhir-fusion ingest hl7v2 PATH...`).

An HL7v2 file may hold one message or many: a new message starts at every MSH at the
start of a segment; segments may end with CR, LF or CRLF, and the file may start with a
UTF-8 byte order mark. Each message goes through the pipeline on its own, so one bad
message is kept as rejected and the rest of the file still loads.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    from adapters.hl7v2.message import split_messages

    return [message.encode("utf-8") for message in split_messages(data)]


async def ingest_files(pipeline: Pipeline, ctx: Context, paths: Iterable[Path | str],
                       feed: str = "hl7v2") -> IngestSummary:
    summary = IngestSummary()
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
                summary.add(file, await pipeline.ingest(ctx, feed, message))
    return summary
