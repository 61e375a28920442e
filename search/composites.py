"""The components of composite search parameters (R4 search.html#composite).

A composite parameter selects elements with its own expression (Observation, or
Observation.component); each component is then evaluated on the same element, so
`component-code-value-quantity=http://loinc.org|8480-6$lt60` matches a component whose
code and whose value both match, not a code in one component and a value in another.

The components come from search/data/composites.json (scripts/generate_composites.py,
from the R4 SearchParameter.component definitions). Supported are the two-part
composites whose first part is a token and whose second is a token, quantity, date or
string: 41 of the 46 R4 composites. The others (MolecularSequence's token$number$number
coordinates, DocumentReference relatesto reference$token) give 400 "not supported"
(search.query).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from conformance.definitions import RESOURCE_TYPES, search_parameters

DATA = Path(__file__).resolve().parent / "data" / "composites.json"
SECOND_TYPES = frozenset({"token", "quantity", "date", "string"})


@dataclass(frozen=True)
class Component:
    type: str  # the type of the component's own search parameter
    expression: str  # FHIRPath relative to the element the composite selects


@cache
def _by_url() -> dict[str, tuple[Component, ...]]:
    raw = json.loads(DATA.read_text("utf-8"))["composites"]
    found: dict[str, tuple[Component, ...]] = {}
    for url, parts in raw.items():
        components = tuple(Component(kind, expression) for kind, expression in parts)
        if (
            len(components) == 2
            and components[0].type == "token"
            and components[1].type in SECOND_TYPES
        ):
            found[url] = components
    return found


def components(resource_type: str, code: str) -> tuple[Component, ...] | None:
    """The components of a composite parameter, or None when it is not a composite
    this server supports."""
    if resource_type not in RESOURCE_TYPES:
        return None
    param = search_parameters(resource_type).get(code)
    if param is None or param.type != "composite":
        return None
    return _by_url().get(param.url)
