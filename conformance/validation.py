"""Structural validation of incoming R4 resources.

fhir.resources ships R5, R4B and STU3 models but no R4. The R4B models are
nearly identical to R4 for clinical resources, so they validate R4 content
here. Resource types that R4 has and R4B dropped are checked only for being
a JSON object of the right type (see README, "Validation").
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from decimal import Decimal
from functools import lru_cache
from typing import Any
from xml.etree import ElementTree

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from conformance.definitions import RESOURCE_TYPES, element_types
from conformance.invariants import invariant_issues
from fhir_server.errors import FHIRError, Issue


@lru_cache(maxsize=None)
def model_class(resource_type: str) -> Any | None:
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None


def _expression(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "json-or-python")):
            # pydantic inserts validator names such as "function-after[...]" in loc
            if "[" in part or part in {"list", "dict"}:
                continue
            path += f".{part}"
    return path


def _issue(resource_type: str, error: dict[str, Any]) -> Issue:
    kind = error.get("type", "")
    code = "structure" if kind in {"extra_forbidden", "missing"} else "value"
    if kind == "extra_forbidden":
        message = "Unknown element"
    elif kind == "missing":
        message = "Required element is missing"
    else:
        # pydantic's msg never contains the offending input; the input itself is not echoed.
        message = str(error.get("msg", "Invalid value"))
    return Issue(code, message, expression=(_expression(resource_type, tuple(error.get("loc", ()))),))


# --- Narrative (R4 narrative.html#xhtml, constraints txt-1 and txt-2) ----------------------

XHTML_NS = "http://www.w3.org/1999/xhtml"
# The elements and attributes that txt-1 (htmlChecks) allows: no scripts, forms, frames,
# objects, head/body, style sheets or event attributes.
_XHTML_ELEMENTS = frozenset(
    "a abbr acronym b big blockquote br caption cite code col colgroup dd dfn div dl dt em "
    "h1 h2 h3 h4 h5 h6 hr i img li ol p pre q samp small span strong sub sup table tbody td "
    "tfoot th thead tr tt ul var".split()
)
_XHTML_ATTRIBUTES = frozenset(
    "abbr accesskey align alt axis bgcolor border cellhalign cellpadding cellspacing "
    "cellvalign char charoff charset cite class colspan compact coords dir frame headers "
    "height href hreflang hspace id lang longdesc name nowrap rel rev rowspan rules scope "
    "shape span src start style summary tabindex title type valign value vspace width".split()
)
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# Narrative images are the resource's own (contained Binary or data: URIs); a scheme
# other than data: would make a reader fetch from elsewhere.
_URL_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*):")


def narrative_issues(div: str, path: str) -> list[Issue]:
    """The narrative rules for Narrative.div: an XHTML <div> in the XHTML namespace,
    only the allowed elements and attributes, no active content, no external images."""

    def bad(message: str) -> list[Issue]:
        return [Issue("value", message, expression=(path,))]

    if "<!" in div or "<?" in div:
        return bad("The narrative must not contain DOCTYPE, entity or processing declarations")
    try:
        root = ElementTree.fromstring(div)
    except ElementTree.ParseError:
        return bad("The narrative is not well-formed XHTML")
    if root.tag != f"{{{XHTML_NS}}}div":
        return bad(f'The narrative must be a <div xmlns="{XHTML_NS}"> element')
    for node in root.iter():
        namespace, _, name = node.tag.rpartition("}")
        if namespace != "{" + XHTML_NS or name not in _XHTML_ELEMENTS:
            return bad(f"The narrative must not contain a <{name[:30]}> element")
        for attribute, text in node.attrib.items():
            if attribute == _XML_LANG:
                continue
            if attribute not in _XHTML_ATTRIBUTES:
                return bad(f"The narrative must not contain a {attribute[:30]} attribute")
            scheme = _URL_SCHEME.match(text) if attribute in ("href", "src") else None
            if scheme and scheme.group(1).lower() in ("javascript", "vbscript"):
                return bad(f"The narrative must not contain {attribute} scripts")
            if attribute == "src" and scheme and scheme.group(1).lower() != "data":
                return bad("Narrative images must not reference external content")
            if attribute == "style" and "url(" in text.lower():
                return bad("Narrative styles must not reference external content")
    return []


# --- JSON shape: FHIR JSON rules that pydantic's lax mode lets through -------------------

# Deeper than any real resource (a Questionnaire nested ten items deep is ~25 levels) and
# shallow enough that neither the model validation, orjson (limit 255) nor the search
# extraction recurse out on it.
MAX_DEPTH = 64
_INT32 = (-(2**31), 2**31 - 1)
_INTEGER_RANGES = {"integer": _INT32, "positiveInt": (1, _INT32[1]), "unsignedInt": (0, _INT32[1])}
_STRING_TYPES = frozenset(
    "string code id uri url canonical oid uuid markdown base64Binary date dateTime instant "
    "time xhtml".split()
)
# FHIR string regex [ \r\n\t\S]+: no control characters except TAB, LF and CR.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class _TooDeep(Exception):
    pass


class _Shape:
    """One walk over a resource, collecting issues with their FHIRPath."""

    def __init__(self) -> None:
        self.types, self.value_sets = element_types()
        self.issues: list[Issue] = []

    def add(self, code: str, message: str, path: str) -> None:
        self.issues.append(Issue(code, message, expression=(path,)))

    def resource(self, value: dict[str, Any], path: str, depth: int) -> None:
        resource_type = value.get("resourceType")
        if not isinstance(resource_type, str) or resource_type not in self.types:
            self.add("structure", "A contained resource needs a known resourceType", path)
            return
        self.complex(value, resource_type, path, depth)

    def complex(self, value: Any, type_name: str, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _TooDeep(path)
        if not isinstance(value, dict):
            self.add("structure", f"Must be a JSON object ({type_name})", path)
            return
        if not value:
            self.add("structure", "An element must have a value or children (ele-1)", path)
            return
        elements = self.types.get(type_name)
        if elements is None:
            return
        for key, item in value.items():
            name = key[1:] if key.startswith("_") and len(key) > 1 else key
            spec = elements.get(name)
            if spec is None:
                if key == "resourceType" and type_name in RESOURCE_TYPES:
                    continue
                # R4 names, so this also covers the R4 types that have no R4B model
                self.add("structure", "Unknown element", f"{path}.{key}")
                continue
            child_type, repeats, binding = spec
            child_path = f"{path}.{name}"
            if key != name:  # _element: the id and extensions of a primitive
                if child_type[0].isupper() or "." in child_type:
                    self.add("structure", "Only primitive elements have a _ twin", child_path)
                else:
                    self.primitive_ext(item, repeats, value.get(name), child_path, depth + 1)
                continue
            if item is None:
                self.add("structure", "null is not allowed in FHIR JSON", child_path)
                continue
            if repeats:
                if not isinstance(item, list):
                    self.add("structure", "Must be a JSON array", child_path)
                    continue
                if not item:
                    self.add("structure", "An array must not be empty", child_path)
                    continue
                twin = value.get("_" + name)
                for i, entry in enumerate(item):
                    at = f"{child_path}[{i}]"
                    if entry is None:
                        if not (isinstance(twin, list) and i < len(twin) and twin[i] is not None):
                            self.add("structure", "null in an array needs a _ twin entry", at)
                        continue
                    self.element(entry, child_type, binding, at, depth + 1)
            else:
                if isinstance(item, list):
                    self.add("structure", "Must not be an array", child_path)
                    continue
                self.element(item, child_type, binding, child_path, depth + 1)

    def primitive_ext(
        self, item: Any, repeats: bool, values: Any, path: str, depth: int
    ) -> None:
        if not repeats:
            self.complex(item, "Element", path, depth)
            return
        if not isinstance(item, list) or not item:
            self.add("structure", "Must be a non-empty JSON array", path)
            return
        for i, entry in enumerate(item):
            if entry is None:
                if not (isinstance(values, list) and i < len(values) and values[i] is not None):
                    self.add("structure", "null in an array needs a value entry", f"{path}[{i}]")
                continue
            self.complex(entry, "Element", f"{path}[{i}]", depth)

    def element(self, value: Any, type_name: str, binding: int, path: str, depth: int) -> None:
        if type_name == "Resource":
            if depth > MAX_DEPTH:
                raise _TooDeep(path)
            if isinstance(value, dict):
                self.resource(value, path, depth)
            else:
                self.add("structure", "Must be a JSON object (a resource)", path)
            return
        if type_name[0].isupper() or "." in type_name:
            self.complex(value, type_name, path, depth)
            if binding >= 0 and isinstance(value, dict):
                self.coded(value, type_name, binding, path)
            return
        self.primitive(value, type_name, binding, path)

    def primitive(self, value: Any, type_name: str, binding: int, path: str) -> None:
        kind = type(value)
        if type_name in _STRING_TYPES:
            if kind is not str:
                self.add("structure", f"A FHIR {type_name} must be a JSON string", path)
            elif not value:
                self.add("value", "A string must not be empty", path)
            elif _CONTROL.search(value):
                self.add("value", "Control characters are not allowed in FHIR strings", path)
            elif binding >= 0:
                url, codes, _ = self.value_sets[binding]
                if value not in codes:
                    self.add("code-invalid", f"The code {value[:40]!r} is not in {url}", path)
            elif type_name == "xhtml":
                self.issues.extend(narrative_issues(value, path))
        elif type_name == "boolean":
            if kind is not bool:
                self.add("structure", "A FHIR boolean must be JSON true or false", path)
        elif type_name == "decimal":
            if kind is not Decimal and kind is not int and kind is not float:
                self.add("structure", "A FHIR decimal must be a JSON number", path)
        elif type_name in _INTEGER_RANGES:
            low, high = _INTEGER_RANGES[type_name]
            # jsonutil keeps integers beyond 64 bits as Decimal with exponent 0
            if kind is Decimal and value.as_tuple().exponent == 0:
                self.add("value", f"A FHIR {type_name} must be in {low}..{high}", path)
            elif kind is not int:
                self.add("structure", f"A FHIR {type_name} must be a JSON integer", path)
            elif not low <= value <= high:
                self.add("value", f"A FHIR {type_name} must be in {low}..{high}", path)

    def coded(self, value: dict[str, Any], type_name: str, binding: int, path: str) -> None:
        """A required binding on Coding / CodeableConcept: a Coding with a system of the
        value set must carry one of its codes; a CodeableConcept with codings from those
        systems must have at least one valid one (other systems are translations)."""
        url, _, systems = self.value_sets[binding]
        if type_name == "Coding":
            codings: list[tuple[str, Any]] = [(path, value)]
        else:
            raw = value.get("coding")
            if not isinstance(raw, list):
                return
            codings = [(f"{path}.coding[{i}]", c) for i, c in enumerate(raw)]
        bad: list[str] = []
        good = False
        for at, coding in codings:
            if not isinstance(coding, dict):
                continue
            codes = systems.get(coding.get("system"))  # type: ignore[arg-type]
            if codes is None:
                continue
            if coding.get("code") in codes:
                good = True
            else:
                bad.append(at)
        if bad and not good:
            for at in bad:
                self.add("code-invalid", f"The code is not in {url} (required binding)", at)


def shape_issues(resource: dict[str, Any]) -> list[Issue]:
    """FHIR JSON rules that the lax model validation lets through: JSON types of
    primitives, null, empty objects and arrays (ele-1), 32-bit integers, control
    characters, required bindings and the narrative rules; plus a nesting limit."""
    shape = _Shape()
    resource_type = resource["resourceType"]
    try:
        shape.resource(resource, resource_type, 0)
    except _TooDeep as exc:
        where = str(exc)
        return [Issue("structure", f"Nested deeper than {MAX_DEPTH} levels", expression=(where,))]
    return shape.issues


# --- Repeated content: a later version of a resource checks only what is new ---------------
#
# Every rule above and in the model is local to an element: whether a list entry is valid
# depends on the entry and its path only (lists keep at least one entry, so the required
# elements stay present). An ImagingStudy that gains one instance per C-STORE, or a Patient
# sent again with each HL7 message, repeats entries of the version validated before it; an
# entry equal to the one at the same position there is dropped before checking. Only a
# clean result is trusted: any issue sends the whole resource through again, so every
# problem is reported with its real path.

_RECENT_LIMIT = 512
_recent: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
_recent_lock = threading.Lock()


def _copy(value: Any) -> Any:
    """A copy of a JSON tree (cheaper than copy.deepcopy), so that a later change of the
    caller's objects cannot change what was validated."""
    kind = type(value)
    if kind is dict:
        return {k: _copy(v) for k, v in value.items()}
    if kind is list:
        return [_copy(v) for v in value]
    return value


def _novel(value: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """`value` without the objects in lists equal to those at the same position in
    `before` (which was valid); every list keeps at least one entry."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        old = before.get(key)
        if type(item) is list and type(old) is list and item and key[0] != "_" and (
            key != "contained"
        ):
            # Only objects are dropped: a primitive array and its _twin are checked
            # together, position by position, so both stay whole; so do the contained
            # resources, which must each be referenced from somewhere in the resource.
            kept = []
            for i, entry in enumerate(item):
                if i < len(old) and type(entry) is dict:
                    prior = old[i]
                    if entry == prior:
                        continue
                    if type(prior) is dict:
                        entry = _novel(entry, prior)
                kept.append(entry)
            if not kept:  # all repeated: one stays, itself pruned
                first, prior = item[0], old[0]
                kept = [_novel(first, prior) if type(first) is dict and type(prior) is dict
                        else first]
            out[key] = kept
        elif type(item) is dict and type(old) is dict and item is not old:
            out[key] = _novel(item, old)
        else:
            out[key] = item
    return out


def _remember(resource: dict[str, Any], resource_type: str) -> None:
    resource_id = resource.get("id")
    if type(resource_id) is not str:
        return
    key = (resource_type, resource_id)
    with _recent_lock:
        _recent[key] = _copy(resource)
        _recent.move_to_end(key)
        if len(_recent) > _RECENT_LIMIT:
            _recent.popitem(last=False)


def validation_issues(resource: Any, expected_type: str | None = None) -> list[Issue]:
    """Every structural problem of `resource`, each with the FHIRPath of the element."""
    if not isinstance(resource, dict):
        return _full_issues(resource, expected_type)
    resource_type = resource.get("resourceType")
    resource_id = resource.get("id")
    before = None
    if type(resource_type) is str and type(resource_id) is str:
        with _recent_lock:
            before = _recent.get((resource_type, resource_id))
    if before is not None and (expected_type is None or expected_type == resource_type):
        if not _full_issues(_novel(resource, before), expected_type):
            _remember(resource, resource_type)
            return []
    issues = _full_issues(resource, expected_type)
    if not issues and type(resource_type) is str:
        _remember(resource, resource_type)
    return issues


def _full_issues(resource: Any, expected_type: str | None = None) -> list[Issue]:
    if not isinstance(resource, dict):
        return [Issue("structure", "A resource must be a JSON object")]
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return [Issue("required", "resourceType is missing", expression=("resourceType",))]
    if expected_type is not None and resource_type != expected_type:
        return [
            Issue(
                "invalid",
                f"resourceType {resource_type} does not match the endpoint type {expected_type}",
                expression=("resourceType",),
            )
        ]
    try:
        issues = shape_issues(resource) if resource_type in element_types()[0] else []
    except RecursionError:
        issues = [Issue("structure", "The resource is nested too deeply")]
    if issues:
        # The model would only repeat these (or coerce them); its checks come after.
        return issues
    model = model_class(resource_type)
    if model is None:
        return invariant_issues(resource, models=False)  # conformance/invariants.py
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [_issue(resource_type, e) for e in exc.errors(include_input=False, include_url=False)]
    except RecursionError:
        return [Issue("structure", "The resource is nested too deeply")]
    except (TypeError, ValueError) as exc:  # fhir.resources raises these for some shapes
        return [Issue("structure", f"Invalid resource: {type(exc).__name__}")]
    # R4 invariants; on a later version's new entries only (the walk is local, and a
    # false alarm on the pruned copy only sends the whole resource through again)
    return invariant_issues(resource)


def validate(resource: Any, expected_type: str | None = None) -> None:
    """Raise FHIRError 400 with an OperationOutcome listing every problem."""
    issues = validation_issues(resource, expected_type)
    if issues:
        raise FHIRError(400, issues)
