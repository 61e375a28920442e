"""Building the transaction Bundle a message becomes.

Entries get deterministic `urn:uuid:` fullUrls (UUIDv5 of the message control id and
the entry's key), so translating the same message twice gives the same Bundle. A
resource keyed by an identifier is written as a conditional update
(`PUT Patient?identifier=system|value`) or, where an existing record must not be
overwritten, a conditional create (`POST` with `ifNoneExist`); the same key is only
added once per Bundle.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

JSON = dict[str, Any]

_NAMESPACE = uuid.UUID("4f6c1d8e-3b0a-5c8e-9f61-2a7d0c5e8b13")


def search_token(identifier: JSON) -> str:
    """`identifier=system|value` for a search URL, with FHIR's escapes for the search
    syntax (`\\|`, `\\,`, `\\$`, `\\\\`) and percent-encoding for the URL."""

    def esc(text: str) -> str:
        for ch in ("\\", "|", ",", "$"):
            text = text.replace(ch, "\\" + ch)
        return quote(text, safe="")

    return f"identifier={esc(identifier.get('system', ''))}|{esc(identifier['value'])}"


class BundleBuilder:
    def __init__(self, seed: str) -> None:
        self._seed = seed
        self.entries: list[JSON] = []
        self._keys: dict[str, str] = {}
        # fullUrls of conditional updates to apply on top of the stored resource
        self.keep_existing: set[str] = set()

    def full_url(self, key: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_NAMESPACE, self._seed + '|' + key)}"

    def known(self, key: str) -> str | None:
        return self._keys.get(key)

    def add(self, key: str, resource: JSON, *, match: JSON | None = None,
            create_only: bool = False) -> str:
        """Add `resource` under `key` and return its fullUrl. With `match` (an
        Identifier) the entry is a conditional update on it, or a conditional create
        when `create_only`; without, a plain create."""
        if key in self._keys:
            return self._keys[key]
        full_url = self.full_url(key)
        rtype = resource["resourceType"]
        if match is None:
            request: JSON = {"method": "POST", "url": rtype}
        elif create_only:
            request = {"method": "POST", "url": rtype, "ifNoneExist": search_token(match)}
        else:
            request = {"method": "PUT", "url": f"{rtype}?{search_token(match)}"}
        self.entries.append({"fullUrl": full_url, "resource": resource, "request": request})
        self._keys[key] = full_url
        return full_url

    def bundle(self) -> JSON:
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}
