"""Content-addressed blob store: files kept by the SHA-256 of their bytes, under the data
folder (`<data>/blobs/sha256/ab/cd/<hex>`).

A blob is written to a temporary file in its final folder, fsynced, renamed into place
and the folder fsynced, so that once `put` returns the bytes survive a crash or a power
cut, and a reader never sees half a file. The same bytes twice are one file. Used for
original DICOM files, which can be hundreds of megabytes and are kept out of the
database (the raw-input table holds a reference to the blob instead).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BLOB_FOLDER = "blobs"
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BlobRef:
    digest: str  # lowercase hex SHA-256 of the bytes
    size: int
    path: Path


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, digest: str) -> Path:
        if not _HEX.fullmatch(digest):
            raise ValueError("a blob digest is 64 lowercase hex digits (SHA-256)")
        return self.root / "sha256" / digest[:2] / digest[2:4] / digest

    def put(self, data: bytes) -> BlobRef:
        """Keep `data` durably; returns where. Writing the same bytes again is a no-op."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_for(digest)
        if path.is_file() and path.stat().st_size == len(data):
            return BlobRef(digest, len(data), path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)
        return BlobRef(digest, len(data), path)

    def get(self, digest: str) -> bytes | None:
        try:
            return self.path_for(digest).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).is_file()


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); not possible on Windows, where it is skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def blob_store_for(store: Any, data_dir: Path | None = None) -> BlobStore:
    """The blob store beside a store's database file (`<data>/blobs`), else under
    `data_dir`, else under the configured data folder (a store without a file, such as
    MongoDB, keeps its blobs on the local disk of the server)."""
    if data_dir is None:
        db_path = getattr(store, "path", None) or _sqlite_file(store)
        if db_path is not None:
            data_dir = Path(db_path).parent
    if data_dir is None:
        from fhir_server.config import resolve_setting

        data_dir = Path(resolve_setting("data_dir", None))
    return BlobStore(Path(data_dir) / BLOB_FOLDER)


def _sqlite_file(store: Any) -> str | None:
    """The main database file of an SQLiteStore (it does not expose its path)."""
    conn = getattr(store, "_writer", None)
    if conn is None:
        return None
    try:
        rows = conn.execute("PRAGMA database_list").fetchall()
    except Exception:  # not an sqlite3 connection, or closed
        return None
    return next((row[2] for row in rows if row[1] == "main" and row[2]), None)
