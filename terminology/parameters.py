"""Operation input (GET query or POST Parameters) and output (Parameters) of the
terminology operations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import FHIRError, Issue

_SIMPLE = ("valueString", "valueCode", "valueUri", "valueCanonical", "valueUrl", "valueId",
           "valueDateTime", "valueDate")  # fmt: skip


# inputs of the terminology operations that are strings, codes or uris: another value[x]
# (valueInteger 5 as a system) is a 400 naming it, not a lookup of "5"
TEXT_PARAMETERS = frozenset({
    "url", "system", "code", "version", "display", "displayLanguage", "property", "filter",
    "valueSetVersion", "systemVersion", "source", "target", "targetsystem", "codeA", "codeB",
    "system-version", "force-system-version", "exclude-system",
})  # fmt: skip


def _bad(diagnostics: str, where: str) -> FHIRError:
    return FHIRError(400, [Issue("invalid", diagnostics, expression=(where,))])


@dataclass
class OperationInput:
    """Named input values: strings from a query or simple Parameters values, and
    resources or complex values (Coding, CodeableConcept) from a Parameters body."""

    values: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def from_query(cls, items: list[tuple[str, str]]) -> OperationInput:
        out = cls()
        for name, value in items:
            if name != "_format":
                out.values.setdefault(name, []).append(value)
        return out

    @classmethod
    def from_parameters(cls, body: Any, query: list[tuple[str, str]]) -> OperationInput:
        out = cls.from_query(query)
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise _bad("The body must be a Parameters resource", "Parameters")
        for n, param in enumerate(body.get("parameter") or []):
            where = f"Parameters.parameter[{n}]"
            if not isinstance(param, dict) or not isinstance(param.get("name"), str):
                raise _bad("A parameter needs a name", f"{where}.name")
            if "resource" in param:
                value: Any = param["resource"]
            else:
                found = [(k, v) for k, v in param.items() if k.startswith("value")]
                if len(found) != 1:
                    raise _bad(f"Parameter '{param['name']}' needs one value[x]", where)
                key, value = found[0]
                if param["name"] in TEXT_PARAMETERS and key not in _SIMPLE:
                    raise _bad(f"Parameter '{param['name']}' must be a string, code or uri "
                               f"value, not {key}", f"{where}.{key}")  # fmt: skip
                if key in ("valueBoolean", "valueInteger", "valueDecimal"):
                    value = str(value).lower() if isinstance(value, bool) else str(value)
            out.values.setdefault(param["name"], []).append(value)
        return out

    def text(self, name: str) -> str | None:
        """The single string value of `name` (400 if it repeats or is not a string)."""
        found = self.values.get(name) or []
        if not found:
            return None
        if len(found) > 1:
            raise _bad(f"Parameter '{name}' may be given once", name)
        if not isinstance(found[0], str):
            raise _bad(f"Parameter '{name}' must be a simple value", name)
        return found[0]

    def texts(self, name: str) -> list[str]:
        return [v for v in self.values.get(name) or [] if isinstance(v, str)]

    def flag(self, name: str) -> bool:
        value = self.text(name)
        if value is None:
            return False
        if value not in ("true", "false"):
            raise _bad(f"Parameter '{name}' must be true or false", name)
        return value == "true"

    def integer(self, name: str, default: int | None = None, high: int = 10**6) -> int | None:
        value = self.text(name)
        if value is None:
            return default
        if not value.isdigit() or int(value) > high:
            raise _bad(f"Parameter '{name}' must be an integer from 0 to {high}", name)
        return int(value)

    def thing(self, name: str) -> dict[str, Any] | None:
        """A resource or complex value (Coding, CodeableConcept) given once."""
        found = self.values.get(name) or []
        if not found:
            return None
        if len(found) > 1 or not isinstance(found[0], dict):
            raise _bad(f"Parameter '{name}' must be one {name} value", name)
        return found[0]


def parameters(*items: tuple[str, str, Any] | None) -> dict[str, Any]:
    """Parameters from (name, value[x] key, value) triples; None and None values skipped.
    A value[x] key of "part" makes a parameter of parts (value is a list of triples)."""
    out: list[dict[str, Any]] = []
    for item in items:
        if item is None or item[2] is None:
            continue
        name, key, value = item
        if key == "part":
            out.append({"name": name, "part": parameters(*value)["parameter"]})
        else:
            out.append({"name": name, key: value})
    return {"resourceType": "Parameters", "parameter": out}


def property_value(value: object) -> tuple[str, Any]:
    from decimal import Decimal

    if isinstance(value, bool):
        return "valueBoolean", value
    if isinstance(value, int):
        return "valueInteger", value
    if isinstance(value, Decimal):
        return "valueDecimal", value
    text = str(value)
    if "|" in text and text.split("|", 1)[0].startswith(("http", "urn")):
        system, code = text.split("|", 1)
        return "valueCoding", {"system": system, "code": code}
    return "valueString" if " " in text else "valueCode", text
