"""The components of composite search parameters (R4 search.html#composite).

A composite parameter selects elements with its own expression (Observation, or
Observation.component); each component is then evaluated on the same element, so
`component-code-value-quantity=http://loinc.org|8480-6$lt60` matches a component whose
code and whose value both match, not a code in one component and a value in another.

conformance/data does not carry SearchParameter.component, so the components of the
standard Observation composites are listed here from the R4 definitions
(Observation-code-value-quantity etc.: component definition and expression). Other
composite parameters are answered with 400 "not supported" (query.py) until the
definitions generator carries components (issue 3).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Component:
    type: str  # the type of the component's own search parameter
    expression: str  # FHIRPath relative to the element the composite selects


_CODE = Component("token", "code")
_QUANTITY = Component("quantity", "value.as(Quantity)")
_CONCEPT = Component("token", "value.as(CodeableConcept)")
_DATE = Component("date", "value.as(dateTime) | value.as(Period)")
_STRING = Component("string", "value.as(string)")

# (resource type, code) -> components, in the order of the `$`-separated value
COMPOSITES: dict[tuple[str, str], tuple[Component, ...]] = {
    ("Observation", "code-value-quantity"): (_CODE, _QUANTITY),
    ("Observation", "code-value-concept"): (_CODE, _CONCEPT),
    ("Observation", "code-value-date"): (_CODE, _DATE),
    ("Observation", "code-value-string"): (_CODE, _STRING),
    ("Observation", "combo-code-value-quantity"): (_CODE, _QUANTITY),
    ("Observation", "combo-code-value-concept"): (_CODE, _CONCEPT),
    ("Observation", "component-code-value-quantity"): (_CODE, _QUANTITY),
    ("Observation", "component-code-value-concept"): (_CODE, _CONCEPT),
}


def components(resource_type: str, code: str) -> tuple[Component, ...] | None:
    """The components of a composite parameter, or None when this server lacks them."""
    return COMPOSITES.get((resource_type, code))
