"""Resource bodies in the SQLite store, compressed with a dictionary of the file's own
resources.

A FHIR JSON body of a few hundred bytes hardly compresses alone (zlib: 676 -> 420
bytes on the generated data), since what repeats is across resources: element names,
code system URLs, references. zlib with a preset dictionary made of earlier bodies of
the same file compresses those repeats away.

Format: a body that starts with `{` is plain JSON (every body written before this module,
and those written before a file has its dictionary). A compressed body is MAGIC, the
8-byte id of its dictionary, then raw deflate data. The id is taken from the SHA-256 of
the dictionary, so a process that meets a body whose dictionary it has not loaded yet
(another process made it) reads it from `body_dictionaries` by that id, and two
processes that each made one never clash.

The dictionary is sampled from the first bodies a store writes to a file without one
(a few of each resource type) and saved in the transaction of the write that completes
the sample. If that transaction rolls back, the store calls `forget_unsaved` and bodies
go plain again until the next sample is complete.

What a file is written with first is seldom what it holds most (a terminology preload, or
the generator's Organizations), so the writer re-samples: once a type the dictionary has
no sample of reaches _SAMPLES_PER_TYPE bodies, new writes get a dictionary made of the
latest bodies of every type seen, saved the same way. Older bodies keep naming their own
dictionary; a file holds at most about _MAX_DICTIONARIES of them.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import zlib
from collections import deque
from typing import Any

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS body_dictionaries (
        id INTEGER PRIMARY KEY, dictionary BLOB NOT NULL)""",
)

MAGIC = b"\x00z"  # never the start of JSON text
_HEADER = len(MAGIC) + 8
_LEVEL = 3  # 82 bytes per generated body in 13 us (level 1: 99 bytes, no faster)
_WBITS = -15  # raw deflate: no zlib header or checksum (SQLite pages carry their own)
_DICTIONARY_BYTES = 32 * 1024  # the deflate window: a larger dictionary is not used
_SAMPLE_BODIES = 200
_SAMPLES_PER_TYPE = 12
_MAX_DICTIONARIES = 16  # re-sampling stops there (each costs at most 32 KiB)
_RESOURCE_TYPE = re.compile(rb'"resourceType":\s*"([A-Za-z]+)"')

# id -> dictionary, across files and connections (an id names one content)
_known: dict[int, bytes] = {}
_known_lock = threading.Lock()


def _dictionary_id(dictionary: bytes) -> int:
    return int.from_bytes(hashlib.sha256(dictionary).digest()[:8], "big") >> 1


def _dictionary(conn: sqlite3.Connection, dictionary_id: int) -> bytes:
    with _known_lock:
        found = _known.get(dictionary_id)
    if found is not None:
        return found
    row = conn.execute(
        "SELECT dictionary FROM body_dictionaries WHERE id = ?", (dictionary_id,)
    ).fetchone()
    if row is None:
        raise RuntimeError(f"body dictionary {dictionary_id} is missing from the store file")
    with _known_lock:
        _known[dictionary_id] = bytes(row[0])
    return bytes(row[0])


def decode(conn: sqlite3.Connection, body: bytes | None) -> bytes | None:
    """The JSON of a stored body (plain or compressed); None stays None."""
    if body is None or body[:2] != MAGIC:
        return body
    dictionary_id = int.from_bytes(body[2:_HEADER], "big")
    inflater = zlib.decompressobj(_WBITS, zdict=_dictionary(conn, dictionary_id))
    return inflater.decompress(body[_HEADER:]) + inflater.flush()


class BodyCodec:
    """Encodes the bodies one store writes; reads through `decode`."""

    def __init__(self) -> None:
        self._id: int | None = None
        # primed with the dictionary once; each body starts from a copy (loading 32 KiB
        # of dictionary per body would cost three times the compression itself)
        self._deflater: Any = None
        self._header = b""
        # the latest bodies of each type this codec wrote, and how many it wrote of each
        self._samples: dict[str, deque[bytes]] = {}
        self._counts: dict[str, int] = {}
        self._covered: frozenset[str] = frozenset()  # types sampled in the current dictionary
        self._dictionaries = 0  # in the file, as far as this codec knows
        self._seen = 0
        self._loaded = False

    def _load(self, conn: sqlite3.Connection) -> None:
        """Use the file's dictionary that covers the most types (another process may have
        re-sampled since)."""
        self._loaded = True
        rows = conn.execute("SELECT id, dictionary FROM body_dictionaries").fetchall()
        self._dictionaries = len(rows)
        best: tuple[int, int, bytes] | None = None
        for dictionary_id, blob in rows:
            covered = len(_types_in(bytes(blob)))
            if best is None or (covered, int(dictionary_id)) > best[:2]:
                best = (covered, int(dictionary_id), bytes(blob))
        if best is not None:
            self._use(best[1], best[2], _types_in(best[2]))

    def _use(self, dictionary_id: int, dictionary: bytes, covered: frozenset[str]) -> None:
        self._id = dictionary_id
        self._deflater = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, zdict=dictionary)
        self._header = MAGIC + dictionary_id.to_bytes(8, "big")
        self._covered = covered
        with _known_lock:
            _known[dictionary_id] = dictionary

    def forget_unsaved(self) -> None:
        """A transaction rolled back: the dictionary it saved may be gone with it."""
        self._id = None
        self._covered = frozenset()
        self._loaded = False

    def encode(self, conn: sqlite3.Connection, resource_type: str, body: bytes) -> bytes:
        """The bytes to store for `body`, inside the caller's write transaction on `conn`."""
        if not self._loaded:
            self._load(conn)
        self._sample(conn, resource_type, body)
        if self._id is None:
            return body
        deflater = self._deflater.copy()
        return self._header + deflater.compress(body) + deflater.flush()

    def _sample(self, conn: sqlite3.Connection, resource_type: str, body: bytes) -> None:
        kept = self._samples.get(resource_type)
        if kept is None:
            kept = self._samples[resource_type] = deque(maxlen=_SAMPLES_PER_TYPE)
        kept.append(body)
        self._counts[resource_type] = self._counts.get(resource_type, 0) + 1
        if self._id is None:
            self._seen += 1
            if self._seen >= _SAMPLE_BODIES:
                self._resample(conn)
        elif (
            resource_type not in self._covered
            and len(kept) == _SAMPLES_PER_TYPE
            and self._dictionaries < _MAX_DICTIONARIES
        ):
            # a type the dictionary has no sample of is now frequent: its bodies would
            # hardly compress, so new writes get a dictionary sampled from every type seen
            self._resample(conn)

    def _resample(self, conn: sqlite3.Connection) -> None:
        # deflate finds matches nearer the end of the dictionary at a lower cost, and
        # reaches back 32 KiB at most: the types written most often go last, and each type
        # gets an equal share so that none is cut off by the window
        ordered = sorted(self._samples, key=lambda t: (self._counts[t], t))
        share = _DICTIONARY_BYTES // len(ordered)
        parts: list[bytes] = []
        for resource_type in ordered:
            taken = b""
            for body in reversed(self._samples[resource_type]):  # the latest first
                if taken and len(taken) + len(body) > share:
                    break
                taken = body + taken
            parts.append(taken[:share])
        dictionary = b"".join(parts)[-_DICTIONARY_BYTES:]
        dictionary_id = _dictionary_id(dictionary)
        conn.execute(
            "INSERT OR IGNORE INTO body_dictionaries (id, dictionary) VALUES (?, ?)",
            (dictionary_id, dictionary),
        )
        self._seen = 0
        self._dictionaries += 1
        self._use(dictionary_id, dictionary, frozenset(ordered))


def _types_in(dictionary: bytes) -> frozenset[str]:
    """The resource types a dictionary has samples of (its bodies name them)."""
    return frozenset(t.decode() for t in _RESOURCE_TYPE.findall(dictionary))
