"""The components of composite search parameters (R4 search.html#composite).

A composite parameter selects elements with its own expression (Observation, or
Observation.component); each component is then evaluated on the same element, so
`component-code-value-quantity=http://loinc.org|8480-6$lt60` matches a component whose
code and whose value both match, not a code in one component and a value in another.

The components come from search/data/composites.json (scripts/generate_composites.py,
from the R4 SearchParameter.component definitions). All 46 R4 composites are supported,
in three shapes:

- token $ token|quantity|date|string (41 of them, e.g. code-value-quantity);
- token $ number $ number: MolecularSequence's four coordinates, e.g.
  `chromosome-window-coordinate=1$lt345$gt123` (chromosome 1, windowStart < 345,
  windowEnd > 123); the numbers are compared as stored, without converting between the
  0-based and 1-based coordinate systems;
- reference $ token: DocumentReference `relationship=DocumentReference/1$replaces`.

A component expression may start with `%resource.` (the variant coordinates read the
chromosome of the whole resource for each variant).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from conformance.definitions import RESOURCE_TYPES, search_parameters

DATA = Path(__file__).resolve().parent / "data" / "composites.json"
SECOND_TYPES = frozenset({"token", "quantity", "date", "string"})
SHAPES = frozenset(
    {*(("token", second) for second in SECOND_TYPES), ("token", "number", "number"),
     ("reference", "token")}
)  # fmt: skip
RESOURCE_PREFIX = "%resource."  # a component read on the resource, not the element
# R4 gives DocumentReference-relationship's relatesto (reference) component the
# expression "code" and its relation (token) component "target": definitions and
# expressions are crossed (R5 pairs relatesto with target). Each component here reads
# the element its type fits, so the value is `[reference]$[relation code]`.
_CROSSED = frozenset({"http://hl7.org/fhir/SearchParameter/DocumentReference-relationship"})


@dataclass(frozen=True)
class Component:
    type: str  # the type of the component's own search parameter
    expression: str  # FHIRPath relative to the element the composite selects


@cache
def _by_url() -> dict[str, tuple[Component, ...]]:
    raw = json.loads(DATA.read_text("utf-8"))["composites"]
    found: dict[str, tuple[Component, ...]] = {}
    for url, parts in raw.items():
        if url in _CROSSED:
            parts = [[parts[0][0], parts[1][1]], [parts[1][0], parts[0][1]]]
        components = tuple(Component(kind, expression) for kind, expression in parts)
        if tuple(c.type for c in components) in SHAPES:
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
