"""R4 invariants that the structural check (validation.py) and the models do not cover,
in one walk over a resource that has passed that check:

- dom-2 (no nested contained), dom-3 (each contained resource is referenced from the
  resource, or refers to it with "#"), dom-4 (contained meta has no versionId or
  lastUpdated), ref-1 (a local reference "#id" names a contained resource);
- Reference format and target types (conformance/references.py);
- ext-1 (an extension has a value or extensions, not both and not neither),
  cpt-2 (ContactPoint.value needs a system), qty-3 (Quantity.code needs a system),
  txt-2 (the narrative has non-whitespace content), per-1 (a period ends after it starts);
- uri-like primitives without whitespace (datatypes.html#uri), a primitive array and its
  _twin of one length (json.html#primitive);
- the required elements of the R4 types that have no R4B model (the model checks the rest).
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any

from conformance.definitions import _load, element_types
from conformance.references import reference_problem
from fhir_server.errors import Issue

_QUANTITIES = frozenset({"Quantity", "Age", "Count", "Distance", "Duration",
                         "SimpleQuantity", "MoneyQuantity"})
_URIS = frozenset({"uri", "url", "canonical", "oid", "uuid"})
_WHITESPACE = re.compile(r"\s")
_TAG = re.compile(r"<[^>]*>")


def _after(start: str, end: str) -> bool:
    """Whether `start` is surely later than `end` (per-1). Values of one precision
    compare as text; full date-times by instant; anything else is not decided (FHIRPath
    gives an empty comparison for mixed precisions)."""
    if len(start) == len(end) and len(start) <= 10:  # two years, months or dates
        return start > end
    if "T" in start and "T" in end:
        try:
            first = datetime.fromisoformat(start.replace("Z", "+00:00"))
            last = datetime.fromisoformat(end.replace("Z", "+00:00"))
            return first > last
        except (TypeError, ValueError):  # a shape the structural check let through
            return False
    return False


@lru_cache(maxsize=1)
def _required() -> dict[str, tuple[str, ...]]:
    """Resource type -> its required (min 1) top-level elements."""
    resources = _load("resource_elements.json")["resources"]
    return {name: tuple(r.get("mandatory", ())) for name, r in resources.items()}


class _Walk:
    def __init__(self) -> None:
        self.types = element_types()[0]
        self.issues: list[Issue] = []
        self.local: dict[str, str] = {}  # each "#id" value -> where it was first seen

    def add(self, rule: str, message: str, path: str, code: str = "invariant") -> None:
        self.issues.append(Issue(code, f"{message} ({rule})", expression=(path,)))

    def resource(self, value: dict[str, Any], path: str, contained: bool) -> None:
        resource_type = value.get("resourceType")
        if not isinstance(resource_type, str) or resource_type not in self.types:
            return
        if contained:
            if "contained" in value:
                self.add("dom-2", "A contained resource must not contain resources",
                         f"{path}.contained")
            meta = value.get("meta")
            if isinstance(meta, dict) and ("versionId" in meta or "lastUpdated" in meta):
                self.add("dom-4", "A contained resource has no meta.versionId or "
                         "meta.lastUpdated", f"{path}.meta")
        self.complex(value, resource_type, path)

    def complex(self, value: dict[str, Any], type_name: str, path: str) -> None:
        elements = self.types.get(type_name)
        if elements is None:
            return
        for key, item in value.items():
            spec = elements.get(key)
            if spec is None:
                continue  # resourceType, _twins (checked with their values)
            child_type = spec[0]
            first = child_type[0]
            if not (first.isupper() or "." in child_type):
                if child_type in _URIS:
                    self.uris(item, f"{path}.{key}")
                if spec[1] and "_" + key in value:
                    twin = value["_" + key]
                    if isinstance(twin, list) and isinstance(item, list) \
                            and len(twin) != len(item):
                        self.add("json", f"_{key} must have as many entries as {key}",
                                 f"{path}._{key}")
                continue
            child_path = f"{path}.{key}"
            if isinstance(item, list):
                for i, entry in enumerate(item):
                    if isinstance(entry, dict):
                        self.element(entry, child_type, f"{child_path}[{i}]", type_name, key)
            elif isinstance(item, dict):
                self.element(item, child_type, child_path, type_name, key)

    def uris(self, item: Any, path: str) -> None:
        values = item if isinstance(item, list) else (item,)
        for value in values:
            if isinstance(value, str):
                if _WHITESPACE.search(value):
                    self.add("uri", "A uri must not contain whitespace", path)
                elif value.startswith("#"):  # e.g. a canonical naming a contained resource
                    self.local.setdefault(value, path)

    def element(self, value: dict[str, Any], type_name: str, path: str, owner: str,
                name: str) -> None:
        if type_name == "Resource":
            if name == "contained":
                self.resource(value, path, True)
            else:  # Bundle.entry.resource, Parameters.parameter.resource: a context of its own
                self.issues += _issues(value, path, True)
            return
        if type_name == "Reference":
            reference = value.get("reference")
            if isinstance(reference, str):
                if reference.startswith("#"):
                    self.local.setdefault(reference, f"{path}.reference")
                problem = reference_problem(reference, f"{owner}.{name}")
                if problem is not None:
                    self.add("ref", f"The reference {problem}", f"{path}.reference")
        elif type_name == "Extension":
            has_value = any(k.startswith("value") for k in value)
            if has_value == ("extension" in value):
                self.add("ext-1", "An extension must have a value or extensions, not both "
                         "and not neither", path)
        elif type_name == "ContactPoint":
            if "value" in value and "system" not in value:
                self.add("cpt-2", "A contact point with a value must have a system", path)
        elif type_name in _QUANTITIES:
            if "code" in value and "system" not in value:
                self.add("qty-3", "A quantity with a code must have a system", path)
        elif type_name == "Period":
            start, end = value.get("start"), value.get("end")
            if isinstance(start, str) and isinstance(end, str) and _after(start, end):
                self.add("per-1", "The period ends before it starts", path)
        elif type_name == "Narrative":
            div = value.get("div")
            if isinstance(div, str) and not _TAG.sub("", div).strip() and "<img" not in div:
                self.add("txt-2", "The narrative must have some non-whitespace content",
                         f"{path}.div")
        self.complex(value, type_name, path)


def invariant_issues(resource: dict[str, Any], models: bool = True) -> list[Issue]:
    """The issues of the rules above; `resource` has passed the structural check.
    `models` says whether an R4B model checks this type (else required elements here)."""
    return _issues(resource, resource["resourceType"], models)


def _issues(resource: dict[str, Any], path: str, models: bool) -> list[Issue]:
    walk = _Walk()
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return []
    if not models:
        for name in _required().get(resource_type, ()):
            if name not in resource and not any(
                k.startswith(name) and k[len(name):][:1].isupper() for k in resource
            ):
                walk.add("min 1", f"{name} is required", f"{path}.{name}", "required")
    walk.resource(resource, path, False)
    contained = resource.get("contained")
    ids = {f"#{c.get('id')}": i for i, c in enumerate(contained) if isinstance(c, dict)} \
        if isinstance(contained, list) else {}
    for reference, where in walk.local.items():
        if reference != "#" and reference not in ids:
            walk.add("ref-1", f"The local reference {reference[:65]} names no contained "
                     "resource", where)
    if ids and "#" not in walk.local:
        for ref, i in ids.items():
            if ref not in walk.local:
                walk.add("dom-3", "A contained resource must be referenced from the "
                         "resource (or refer to it with #)", f"{path}.contained[{i}]")
    return walk.issues


__all__ = ["invariant_issues"]
