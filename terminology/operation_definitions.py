"""OperationDefinitions of the terminology operations, in the shape of the official R4 ones
(CodeSystem-lookup, CodeSystem-validate-code, CodeSystem-subsumes, ValueSet-expand,
ValueSet-validate-code, ConceptMap-translate): same codes, levels and parameter names,
cardinalities and types. Served at OperationDefinition/<id> under both the official id
and the short name the CapabilityStatement links ("validate-code" covers both types).
"""

from __future__ import annotations

from typing import Any

# (name, use, min, max, type, documentation)
_Param = tuple[str, str, int, str, str, str]

_LOOKUP: tuple[_Param, ...] = (
    ("code", "in", 0, "1", "code", "The code to look up"),
    ("system", "in", 0, "1", "uri", "The system of the code"),
    ("version", "in", 0, "1", "string", "The version of the system"),
    ("coding", "in", 0, "1", "Coding", "A coding to look up"),
    ("date", "in", 0, "1", "dateTime", "The date for which the information is wanted"),
    ("displayLanguage", "in", 0, "1", "code", "The language of the display returned"),
    ("property", "in", 0, "*", "code", "A property to return"),
    ("name", "out", 1, "1", "string", "The name of the code system"),
    ("version", "out", 0, "1", "string", "The version of the code system"),
    ("display", "out", 1, "1", "string", "The display of the concept"),
    ("designation", "out", 0, "*", "", "Other designations (language, use, value)"),
    ("property", "out", 0, "*", "", "Properties: parent, child, inactive, definition, ..."),
)
_CS_VALIDATE: tuple[_Param, ...] = (
    ("url", "in", 0, "1", "uri", "The code system url"),
    ("codeSystem", "in", 0, "1", "CodeSystem", "The code system to validate against"),
    ("code", "in", 0, "1", "code", "The code to validate"),
    ("version", "in", 0, "1", "string", "The version of the code system"),
    ("display", "in", 0, "1", "string", "The display to check"),
    ("coding", "in", 0, "1", "Coding", "A coding to validate"),
    ("codeableConcept", "in", 0, "1", "CodeableConcept", "A concept to validate"),
    ("date", "in", 0, "1", "dateTime", "The date for which the validation should be done"),
    ("abstract", "in", 0, "1", "boolean", "Whether an abstract code is valid"),
    ("displayLanguage", "in", 0, "1", "code", "The language of the display"),
    ("result", "out", 1, "1", "boolean", "True if the concept details supplied are valid"),
    ("message", "out", 0, "1", "string", "Error details, when result is false; else hints"),
    ("display", "out", 0, "1", "string", "A valid display for the concept"),
)
_VS_VALIDATE: tuple[_Param, ...] = (
    ("url", "in", 0, "1", "uri", "The value set url"),
    ("context", "in", 0, "1", "uri", "Not supported"),
    ("valueSet", "in", 0, "1", "ValueSet", "The value set to validate against"),
    ("valueSetVersion", "in", 0, "1", "string", "The version of the value set"),
    ("code", "in", 0, "1", "code", "The code to validate"),
    ("system", "in", 0, "1", "uri", "The system of the code"),
    ("systemVersion", "in", 0, "1", "string", "The version of the system"),
    ("display", "in", 0, "1", "string", "The display to check"),
    ("coding", "in", 0, "1", "Coding", "A coding to validate"),
    ("codeableConcept", "in", 0, "1", "CodeableConcept", "A concept to validate"),
    ("date", "in", 0, "1", "dateTime", "The date for which the validation should be done"),
    ("abstract", "in", 0, "1", "boolean", "Whether an abstract code is valid"),
    ("displayLanguage", "in", 0, "1", "code", "The language of the display"),
    ("result", "out", 1, "1", "boolean", "True if the concept details supplied are valid"),
    ("message", "out", 0, "1", "string", "Error details, when result is false; else hints"),
    ("display", "out", 0, "1", "string", "A valid display for the concept"),
)
_EXPAND: tuple[_Param, ...] = (
    ("url", "in", 0, "1", "uri", "The value set url (url|version pins its version)"),
    ("valueSet", "in", 0, "1", "ValueSet", "The value set to expand"),
    ("valueSetVersion", "in", 0, "1", "string", "The version of the value set"),
    ("context", "in", 0, "1", "uri", "Not supported"),
    ("contextDirection", "in", 0, "1", "code", "Not supported"),
    ("filter", "in", 0, "1", "string", "Type-ahead text: each word starts a word of a "
     "display or designation (a code-like filter, e.g. E11.2, also a code); case and "
     "accents ignored; ideographs in order; ranked phrase, adjacent, whole words, prefixes"),
    ("date", "in", 0, "1", "dateTime", "Ignored"),
    ("offset", "in", 0, "1", "integer", "Paging: concepts to skip"),
    ("count", "in", 0, "1", "integer", "Paging: concepts to return"),
    ("includeDesignations", "in", 0, "1", "boolean", "Return designations"),
    ("designation", "in", 0, "*", "string", "Ignored"),
    ("includeDefinition", "in", 0, "1", "boolean", "Ignored"),
    ("activeOnly", "in", 0, "1", "boolean", "Only active concepts"),
    ("excludeNested", "in", 0, "1", "boolean", "Expansions are always flat"),
    ("excludeNotForUI", "in", 0, "1", "boolean", "Ignored"),
    ("excludePostCoordinated", "in", 0, "1", "boolean", "Ignored"),
    ("displayLanguage", "in", 0, "1", "code", "Language of the displays (else "
     "Accept-Language)"),
    ("exclude-system", "in", 0, "*", "canonical", "Leave out the codes of a system"),
    ("system-version", "in", 0, "*", "canonical", "system|version when compose gives none"),
    ("check-system-version", "in", 0, "*", "canonical", "Ignored"),
    ("force-system-version", "in", 0, "*", "canonical", "system|version, overriding compose"),
    ("return", "out", 1, "1", "ValueSet", "The value set with its expansion"),
)
_TRANSLATE: tuple[_Param, ...] = (
    ("url", "in", 0, "1", "uri", "The concept map url"),
    ("conceptMap", "in", 0, "1", "ConceptMap", "Not supported: store the map first"),
    ("conceptMapVersion", "in", 0, "1", "string", "Ignored"),
    ("code", "in", 0, "1", "code", "The code to translate"),
    ("system", "in", 0, "1", "uri", "The system of the code"),
    ("version", "in", 0, "1", "string", "Ignored"),
    ("source", "in", 0, "1", "uri", "The source value set of the maps to use"),
    ("coding", "in", 0, "1", "Coding", "A coding to translate"),
    ("codeableConcept", "in", 0, "1", "CodeableConcept", "A concept to translate"),
    ("target", "in", 0, "1", "uri", "The target value set of the maps to use"),
    ("targetsystem", "in", 0, "1", "uri", "The target system wanted"),
    ("dependency", "in", 0, "*", "", "Not supported"),
    ("reverse", "in", 0, "1", "boolean", "Translate from target back to source"),
    ("result", "out", 1, "1", "boolean", "True if a match (not unmatched/disjoint) was found"),
    ("message", "out", 0, "1", "string", "Why there is no match"),
    ("match", "out", 0, "*", "", "equivalence, concept (Coding), source (map url)"),
)
_SUBSUMES: tuple[_Param, ...] = (
    ("codeA", "in", 0, "1", "code", "The 'A' code"),
    ("codeB", "in", 0, "1", "code", "The 'B' code"),
    ("system", "in", 0, "1", "uri", "The code system"),
    ("version", "in", 0, "1", "string", "The version of the code system"),
    ("codingA", "in", 0, "1", "Coding", "The 'A' coding"),
    ("codingB", "in", 0, "1", "Coding", "The 'B' coding"),
    ("outcome", "out", 1, "1", "code", "equivalent | subsumes | subsumed-by | not-subsumed"),
)

# official id: (code, resource types, instance, parameters, title)
DEFINITIONS: dict[str, tuple[str, tuple[str, ...], bool, tuple[_Param, ...], str]] = {
    "CodeSystem-lookup": ("lookup", ("CodeSystem",), False, _LOOKUP,
                          "Concept Look Up & Decomposition"),
    "CodeSystem-validate-code": ("validate-code", ("CodeSystem",), True, _CS_VALIDATE,
                                 "Code System based Validation"),
    "CodeSystem-subsumes": ("subsumes", ("CodeSystem",), True, _SUBSUMES,
                            "Subsumption Testing"),
    "ValueSet-expand": ("expand", ("ValueSet",), True, _EXPAND, "Value Set Expansion"),
    "ValueSet-validate-code": ("validate-code", ("ValueSet",), True, _VS_VALIDATE,
                               "Value Set based Validation"),
    "ConceptMap-translate": ("translate", ("ConceptMap",), True, _TRANSLATE,
                             "Concept Translation"),
}  # fmt: skip
# the short names the CapabilityStatement links (OperationDefinition/<code>)
SHORT = {"lookup": "CodeSystem-lookup", "expand": "ValueSet-expand",
         "translate": "ConceptMap-translate", "subsumes": "CodeSystem-subsumes"}  # fmt: skip


def _parameter(p: _Param) -> dict[str, Any]:
    name, use, low, high, kind, doc = p
    out: dict[str, Any] = {"name": name, "use": use, "min": low, "max": high}
    if kind:
        out["type"] = kind
    out["documentation"] = doc
    return out


def definition(op_id: str, base_url: str) -> dict[str, Any] | None:
    """OperationDefinition `op_id` (an official id, a short name, or "validate-code",
    which covers CodeSystem and ValueSet)."""
    if op_id == "validate-code":
        cs, vs = DEFINITIONS["CodeSystem-validate-code"], DEFINITIONS["ValueSet-validate-code"]
        merged = {(p[0], p[1]): p for p in (*cs[3], *vs[3])}
        entry = ("validate-code", ("CodeSystem", "ValueSet"), True, tuple(merged.values()),
                 "Code System and Value Set based Validation")  # fmt: skip
    else:
        entry = DEFINITIONS.get(SHORT.get(op_id, op_id))  # type: ignore[assignment]
        if entry is None:
            return None
    code, types, instance, params, title = entry
    return {
        "resourceType": "OperationDefinition",
        "id": op_id,
        "url": f"{base_url}/OperationDefinition/{op_id}",
        "name": title.replace(" ", "").replace("&", "And"),
        "title": title,
        "status": "active",
        "kind": "operation",
        "affectsState": False,
        "code": code,
        "resource": list(types),
        "system": False,
        "type": True,
        "instance": instance,
        "parameter": [_parameter(p) for p in params],
    }


def type_operations(resource_type: str, codes: frozenset[str], base_url: str
                    ) -> list[dict[str, str]]:
    """CapabilityStatement.rest.resource.operation of `resource_type`: its terminology
    operations among the route `codes` ("$lookup", ...), each with its definition."""
    return [
        {"name": code, "definition": f"{base_url}/OperationDefinition/{op_id}"}
        for op_id, (code, types, _, _, _) in DEFINITIONS.items()
        if resource_type in types and f"${code}" in codes
    ]
