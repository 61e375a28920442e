"""Opaque cursors for keyset ("seek") paging (R4 search.html#paging leaves the form of
paging links to the server).

A cursor holds the sort key values and the rid of the last resource of a page; the
next page is what sorts after it, so a page costs the same wherever it is, and
resources written meanwhile never make the next page skip or repeat one.

The cursor is base64url JSON with a keyed BLAKE2b tag over it and the sort it was made
for. The tag makes a cursor edited by hand, cut short, or reused with another `_sort`
a 400 rather than a silently different page. It protects nothing secret: the values
are bound as SQL parameters whatever they are, and are the client's own results.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from fhir_server.errors import FHIRError, Issue

PARAMETER = "_cursor"
_KEY = b"fhir-fusion keyset cursor v1"
_TAG_BYTES = 12
_MAX_CURSOR = 4096

Position = tuple[tuple[Any, ...], int]  # sort key values, rid


def _tag(payload: bytes, sort_signature: str) -> bytes:
    digest = hashlib.blake2b(payload, key=_KEY, person=b"cursor", digest_size=_TAG_BYTES)
    digest.update(b"\0" + sort_signature.encode())
    return digest.digest()


def encode(values: tuple[Any, ...], rid: int, sort_signature: str) -> str:
    """The cursor after the row with these sort key `values` and `rid`."""
    payload = json.dumps([list(values), rid], separators=(",", ":")).encode()
    token = base64.urlsafe_b64encode(payload + _tag(payload, sort_signature))
    return token.decode().rstrip("=")


def _bad() -> FHIRError:
    return FHIRError(
        400, [Issue("invalid", "'_cursor' is not a cursor of this search", expression=(PARAMETER,))]
    )


def decode(cursor: str, sort_signature: str, keys: int) -> Position:
    """The position a cursor names; FHIRError 400 for anything this server did not make
    for a search with the same sort."""
    if not cursor or len(cursor) > _MAX_CURSOR or not cursor.isascii():
        raise _bad()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except ValueError:
        raise _bad() from None
    payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if len(raw) <= _TAG_BYTES or not hmac.compare_digest(tag, _tag(payload, sort_signature)):
        raise _bad()
    try:
        values, rid = json.loads(payload)
    except ValueError:
        raise _bad() from None
    if type(values) is not list or len(values) != keys or type(rid) is not int:
        raise _bad()
    return tuple(values), rid
