"""What a Reference may point to (R4 references.html): the format of a literal
reference and, for a relative one, the resource types the element allows.

The allowed types come from the R4 search parameters already generated into
conformance/data/search_parameters.json: a reference parameter whose expression is one
plain element path ("Observation.subject") lists exactly that element's target types.
Elements without such a parameter are not type-checked (no false refusals).
"""

from __future__ import annotations

import re
from functools import lru_cache
from types import MappingProxyType
from collections.abc import Mapping

from conformance.definitions import RESOURCE_TYPES, _load

# Type/id or Type/id/_history/vid (R4 references.html#literal, datatypes.html#id)
RELATIVE = re.compile(
    r"([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_PLAIN_PATH = re.compile(r"[A-Z][A-Za-z]+(?:\.[a-z][A-Za-z]*)+")


@lru_cache(maxsize=1)
def target_types() -> Mapping[str, frozenset[str]]:
    """Element path ("Observation.subject") -> the resource types it may reference."""
    parameters = _load("search_parameters.json")["parameters"]
    out: dict[str, frozenset[str]] = {}
    for by_code in parameters.values():
        for definition in by_code.values():
            targets = definition.get("targets")
            expression = definition.get("expression") or ""
            if definition.get("type") != "reference" or not targets:
                continue
            if _PLAIN_PATH.fullmatch(expression) and set(targets) <= RESOURCE_TYPES:
                out[expression] = frozenset(targets)
    return MappingProxyType(out)


def reference_problem(reference: str, element: str) -> str | None:
    """Why `reference` (the value of `element`'s Reference.reference, element given as
    its definition path "Observation.subject") is not acceptable, or None."""
    if reference.startswith("#") or reference.startswith(("urn:uuid:", "urn:oid:")):
        return None  # local (checked against contained) / Bundle-scoped
    match = RELATIVE.fullmatch(reference)
    if match is None:
        if "/" not in reference.split("?", 1)[0] or not _SCHEME.fullmatch(reference):
            return ("is not a reference: expected Type/id, an absolute URL or #id "
                    "(R4 references.html#literal)")
        return None  # an absolute URL: another server's resource, not checked here
    target = match.group(1)
    if target not in RESOURCE_TYPES:
        return f"names {target[:64]}, which is not an R4 resource type"
    allowed = target_types().get(element)
    if allowed is not None and target not in allowed:
        return f"may refer to {' | '.join(sorted(allowed))}, not {target}"
    return None


__all__ = ["RELATIVE", "reference_problem", "target_types"]
