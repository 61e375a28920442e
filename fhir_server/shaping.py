"""_summary and _elements: the subset of each resource a searchset returns
(R4 search.html#summary, search.html#elements).

- `_summary=true`: the top-level elements the R4 StructureDefinition marks isSummary.
- `_summary=text`: id, meta, text and the mandatory (min >= 1) top-level elements.
- `_summary=data`: everything but text.
- `_elements=a,b`: the listed top-level elements plus the mandatory ones.

A subset carries the meta tag SUBSETTED (v3-ObservationValue), so that nobody takes it
for the whole resource. The element lists are generated from the R4 definitions into
conformance/data/resource_elements.json by scripts/generate_definitions.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from conformance.definitions import DATA_DIR, choice_elements
from search.result import ResultParams

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _elements() -> Mapping[str, Mapping[str, tuple[str, ...]]]:
    raw = json.loads((DATA_DIR / "resource_elements.json").read_text("utf-8"))["resources"]
    return {
        rtype: {kind: tuple(names) for kind, names in lists.items()} for rtype, lists in raw.items()
    }


def summary_elements(resource_type: str) -> tuple[str, ...]:
    """The isSummary top-level elements of `resource_type`, e.g. ('id', 'meta', ...)."""
    return _elements().get(resource_type, {}).get("summary", ())


def mandatory_elements(resource_type: str) -> tuple[str, ...]:
    """The top-level elements with min >= 1, e.g. ('status', 'code') for Observation."""
    return _elements().get(resource_type, {}).get("mandatory", ())


def _json_names(element: str) -> set[str]:
    """The JSON property names an element may take: deceased[x] -> deceasedBoolean, ...;
    each also with the `_` prefix that carries a primitive's id and extensions."""
    base = element.removesuffix("[x]")
    names = {base + suffix for suffix in choice_elements().get(base, ())}
    if not element.endswith("[x]"):
        names.add(element)
    return names | {"_" + name for name in names}


def _keep(resource: dict[str, Any], elements: set[str]) -> dict[str, Any]:
    names: set[str] = set(_ALWAYS)
    for element in elements:
        names |= _json_names(element)
    return {key: value for key, value in resource.items() if key in names}


def _tagged(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(
        t.get("code") == "SUBSETTED" and t.get("system") == SUBSETTED["system"]
        for t in tags
        if isinstance(t, dict)
    ):
        tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    return {**resource, "meta": meta}


def shapes(result: ResultParams) -> bool:
    """Whether `result` asks for a subset of each resource."""
    return result.summary in ("true", "text", "data") or bool(result.elements)


def shape(resource: dict[str, Any], result: ResultParams) -> dict[str, Any]:
    """The subset of `resource` that `result` (_summary / _elements) asks for."""
    resource_type = str(resource.get("resourceType", ""))
    if result.summary == "true":
        shaped = _keep(resource, set(summary_elements(resource_type)))
    elif result.summary == "text":
        shaped = _keep(resource, {"text", *mandatory_elements(resource_type)})
    elif result.summary == "data":
        shaped = {key: value for key, value in resource.items() if key not in ("text", "_text")}
    elif result.elements:
        shaped = _keep(resource, {*result.elements, *mandatory_elements(resource_type)})
    else:
        return resource
    return _tagged(shaped)
