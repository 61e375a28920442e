"""References as this server stores them (R4 references.html#literal).

A reference written with this server's own base URL ("http://host/fhir/Patient/1", as
copied from a Location header or an entry.fullUrl) names the same resource as the
relative "Patient/1"; it is stored relative, so search, compartments, chains, _has and
_include (which compare stored Type/id) see it. A urn:uuid: / urn:oid: reference only
means something inside the Bundle that defines it: outside one it can never resolve.
"""

from __future__ import annotations

from typing import Any

from conformance.definitions import RESOURCE_TYPES
from fhir_server.errors import FHIRError

_URN = ("urn:uuid:", "urn:oid:")


def _local_form(reference: str, prefix: str) -> str | None:
    """The relative form of `reference` when it is [base]/Type/id[/_history/vid]."""
    if not prefix or not reference.startswith(prefix):
        return None
    rest = reference[len(prefix):]
    parts = rest.split("/")
    if len(parts) not in (2, 4) or parts[0] not in RESOURCE_TYPES or not parts[1]:
        return None
    if len(parts) == 4 and parts[2] != "_history":
        return None
    return rest


def _walk(value: Any, path: str, prefix: str) -> Any:
    """`value` with own-base references made relative (the same object when nothing
    changes); raises on a urn reference, naming the element."""
    if isinstance(value, dict):
        changed: dict[str, Any] | None = None
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                if item.startswith(_URN):
                    raise FHIRError.simple(
                        400, "invalid",
                        f"{path}.reference is a {item[:8]} reference, which only a Bundle "
                        "entry's fullUrl can resolve (in a transaction); outside one it names "
                        "nothing",
                        f"{path}.reference",
                    )
                local = _local_form(item, prefix)
                if local is not None:
                    changed = changed if changed is not None else dict(value)
                    changed[key] = local
            elif isinstance(item, (dict, list)):
                if key == "contained":
                    continue  # checked as resources of their own below
                new = _walk(item, f"{path}.{key}", prefix)
                if new is not item:
                    changed = changed if changed is not None else dict(value)
                    changed[key] = new
        contained = value.get("contained")
        if isinstance(contained, list):
            new_list = [_walk(c, f"{path}.contained[{i}]", prefix)
                        for i, c in enumerate(contained)]
            if any(a is not b for a, b in zip(new_list, contained, strict=True)):
                changed = changed if changed is not None else dict(value)
                changed["contained"] = new_list
        return value if changed is None else changed
    if isinstance(value, list):
        items = [_walk(item, f"{path}[{i}]", prefix) if isinstance(item, (dict, list)) else item
                 for i, item in enumerate(value)]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return items
        return value
    return value


def localise(resource: Any, base_url: str = "") -> Any:
    """`resource` ready to store: references on `base_url` (this server's base, no
    trailing slash; empty for none) made relative. A urn: reference is a 400 naming
    the element. Returns `resource` itself when nothing changes."""
    if not isinstance(resource, dict):
        return resource
    prefix = base_url.rstrip("/") + "/" if base_url else ""
    root = resource.get("resourceType")
    return _walk(resource, root if isinstance(root, str) else "Resource", prefix)


__all__ = ["localise"]
