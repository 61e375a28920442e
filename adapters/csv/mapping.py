"""CSV mapping files: which resource each row becomes and where each column goes.

A mapping is a YAML or TOML file (docs/csv-mapping.md; a JSON Schema for editors in
docs/csv-mapping.schema.json). The built-in ones live in adapters/csv/mappings/
and are found by name (`patients`, `lab-results`, `vital-signs`). Loading checks the
whole file and names the bad key, so a mapping error is found before any row is read.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from adapters.csv.values import TRANSFORM_NAMES, TRANSFORM_STEPS, check_formats

BUILTIN_PACKAGE = "adapters.csv"
RESOURCE_TYPES = ("Patient", "Observation", "Condition", "Immunization", "Encounter",
                  "AllergyIntolerance", "Procedure", "MedicationStatement", "Practitioner",
                  "Organization")
VALUE_TYPES = ("string", "code", "boolean", "integer", "decimal", "date", "dateTime",
               "CodeableConcept", "Coding", "Quantity", "Reference", "Identifier")
_PATH = re.compile(r"[a-z][A-Za-z]*(\[(\d+|)\])?(\.[a-z][A-Za-z]*(\[(\d+|)\])?)*")


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Column:
    """One column and the element it fills."""

    path: str  # FHIR element path in the resource, e.g. "name[0].given[]"
    column: str
    type: str = "string"
    required: bool = False
    transforms: tuple[Any, ...] = ()
    system: str | None = None  # CodeableConcept/Coding/Identifier system; Reference target's
    display_column: str | None = None
    unit_column: str | None = None
    unit: str | None = None  # a fixed unit for a Quantity
    target: str | None = None  # the resource type of a Reference
    concept_map: str | None = None  # url of a ConceptMap to translate the code with
    date_formats: tuple[str, ...] = ()
    decimal_comma: bool = False


@dataclass(frozen=True)
class Mapping:
    name: str
    resource: str
    identity_system: str
    identity_columns: tuple[str, ...]
    write: str  # "update" (conditional update) or "create" (conditional create)
    columns: tuple[Column, ...]
    constants: dict[str, Any] = field(default_factory=dict)
    when: dict[str, Any] | None = None  # row filter: {column, equals | in}
    date_formats: tuple[str, ...] = ()
    timezone: str = "UTC"
    null_values: tuple[str, ...] = ("",)
    title: str = ""
    source: dict[str, Any] = field(default_factory=dict, compare=False)  # the file as read

    def needed_columns(self) -> set[str]:
        names = set(self.identity_columns)
        for col in self.columns:
            if col.required:
                names.add(col.column)
        if self.when:
            names.add(self.when["column"])
        return names


def builtin_names() -> list[str]:
    folder = resources.files(BUILTIN_PACKAGE) / "mappings"
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir()
                  if p.name.endswith((".yaml", ".yml", ".toml")))


def load(name_or_path: str | Path) -> Mapping:
    """A built-in mapping by name, or a mapping file by path."""
    text = str(name_or_path)
    if re.fullmatch(r"[a-z0-9][a-z0-9-]*", text) and not Path(text).exists():
        folder = resources.files(BUILTIN_PACKAGE) / "mappings"
        for suffix in (".yaml", ".yml", ".toml"):
            candidate = folder / f"{text}{suffix}"
            if candidate.is_file():
                return parse(_read(candidate.read_text("utf-8"), suffix, text), text)
        raise MappingError(f"no built-in mapping {text!r} (known: {', '.join(builtin_names())})")
    path = Path(text)
    try:
        content = path.read_text("utf-8")
    except OSError as exc:
        raise MappingError(f"cannot read the mapping file {path}: {exc.strerror}") from None
    return parse(_read(content, path.suffix.lower(), str(path)), str(path))


def _read(content: str, suffix: str, where: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(content) if suffix == ".toml" else yaml.safe_load(content)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"{where}: not valid {'TOML' if suffix == '.toml' else 'YAML'}: "
                           f"{exc}") from None
    if not isinstance(data, dict):
        raise MappingError(f"{where}: a mapping file must hold a table of keys")
    return data


def parse(data: dict[str, Any], where: str = "mapping") -> Mapping:
    """Check a mapping as read from YAML/TOML (or kept with a rejected row)."""
    known = {"name", "title", "description", "resource", "identity", "columns", "constants",
             "when", "date_formats", "timezone", "null_values"}
    _no_unknown(data, known, where)
    resource = _get(data, "resource", str, where)
    if resource not in RESOURCE_TYPES:
        raise MappingError(f"{where}: resource {resource!r} is not one of "
                           f"{', '.join(RESOURCE_TYPES)}")
    identity = _get(data, "identity", dict, where)
    _no_unknown(identity, {"system", "columns", "write"}, f"{where}: identity")
    id_columns = _get(identity, "columns", list, f"{where}: identity")
    if not id_columns or not all(isinstance(c, str) for c in id_columns):
        raise MappingError(f"{where}: identity.columns must list at least one column name")
    write = identity.get("write", "update")
    if write not in ("update", "create"):
        raise MappingError(f"{where}: identity.write must be 'update' or 'create'")
    formats = tuple(data.get("date_formats") or ())
    try:
        check_formats(formats)
    except ValueError as exc:
        raise MappingError(f"{where}: date_formats: {exc}") from None
    columns = tuple(_column(item, f"{where}: columns[{n}]")
                    for n, item in enumerate(_get(data, "columns", list, where)))
    constants = data.get("constants") or {}
    if not isinstance(constants, dict):
        raise MappingError(f"{where}: constants must be a table of element path: value")
    for path in constants:
        _check_path(path, f"{where}: constants")
        _check_elements(resource, path, f"{where}: constants")
    for n, col in enumerate(columns):
        _check_elements(resource, col.path, f"{where}: columns[{n}]")
    when = data.get("when")
    if when is not None:
        if not isinstance(when, dict) or not isinstance(when.get("column"), str) or not (
                "equals" in when or isinstance(when.get("in"), list)):
            raise MappingError(f"{where}: when must be {{column, equals}} or {{column, in: [...]}}")
    zone = data.get("timezone", "UTC")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(zone)
    except Exception:  # noqa: BLE001 - zoneinfo raises several kinds for a bad key
        raise MappingError(f"{where}: unknown timezone {zone!r}") from None
    return Mapping(
        name=str(data.get("name") or Path(where).stem),
        resource=resource,
        identity_system=_get(identity, "system", str, f"{where}: identity"),
        identity_columns=tuple(id_columns),
        write=write,
        columns=columns,
        constants=constants,
        when=when,
        date_formats=formats,
        timezone=zone,
        null_values=tuple(str(v) for v in data.get("null_values", [""])),
        title=str(data.get("title", "")),
        source=data,
    )


def _column(item: Any, where: str) -> Column:
    if not isinstance(item, dict):
        raise MappingError(f"{where}: must be a table")
    known = {"column", "path", "type", "required", "transform", "system", "display_column",
             "unit_column", "unit", "target", "concept_map", "date_formats", "decimal_comma"}
    _no_unknown(item, known, where)
    path = _get(item, "path", str, where)
    _check_path(path, where)
    kind = item.get("type", "string")
    if kind not in VALUE_TYPES:
        raise MappingError(f"{where}: type {kind!r} is not one of {', '.join(VALUE_TYPES)}")
    if kind == "Reference" and not (item.get("target") and item.get("system")):
        raise MappingError(f"{where}: a Reference needs target (resource type) and system "
                           "(of the identifier it is found by)")
    steps = item.get("transform") or []
    if not isinstance(steps, list):
        steps = [steps]
    for step in steps:
        if isinstance(step, str) and step in TRANSFORM_NAMES:
            continue
        if isinstance(step, dict) and len(step) == 1 and next(iter(step)) in TRANSFORM_STEPS:
            continue
        raise MappingError(f"{where}: unknown transform {step!r} (names: "
                           f"{', '.join(TRANSFORM_NAMES)}; steps: {', '.join(TRANSFORM_STEPS)})")
    formats = tuple(item.get("date_formats") or ())
    try:
        check_formats(formats)
    except ValueError as exc:
        raise MappingError(f"{where}: {exc}") from None
    return Column(
        path=path, column=_get(item, "column", str, where), type=kind,
        required=bool(item.get("required", False)), transforms=tuple(steps),
        system=item.get("system"), display_column=item.get("display_column"),
        unit_column=item.get("unit_column"), unit=item.get("unit"), target=item.get("target"),
        concept_map=item.get("concept_map"), date_formats=formats,
        decimal_comma=bool(item.get("decimal_comma", False)),
    )


def _get(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise MappingError(f"{where}: {key} is missing or not a {kind.__name__}")
    return value


def _no_unknown(data: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise MappingError(f"{where}: unknown key {unknown[0]!r} "
                           f"(known: {', '.join(sorted(known))})")


# a row makes one resource: a list index past this is a mistake, not data (name[99999999]
# would make a list of a hundred million empty items)
MAX_LIST_INDEX = 99


def _check_path(path: str, where: str) -> None:
    if not isinstance(path, str) or not _PATH.fullmatch(path):
        raise MappingError(f"{where}: {path!r} is not an element path like name[0].given[]")
    for index in re.findall(r"\[(\d+)\]", path):
        if int(index) > MAX_LIST_INDEX:
            raise MappingError(f"{where}: {path!r}: list index {index} is past "
                               f"{MAX_LIST_INDEX}")


def _check_elements(resource: str, path: str, where: str) -> None:
    """Every step of `path` is an element of the type before it (R4 definitions), a
    list index only on an element that repeats: a misspelt path is refused when the
    mapping loads, not row by row when it runs."""
    from conformance.definitions import element_types

    types, _ = element_types()
    current = resource
    for step in path.split("."):
        name, _, index = step.partition("[")
        elements = types.get(current)
        found = elements.get(name) if elements is not None else None
        if found is None:
            raise MappingError(f"{where}: {path!r}: {name!r} is not an element of {current}")
        kind, repeats, _ = found
        if index and not repeats:
            raise MappingError(f"{where}: {path!r}: {current}.{name} does not repeat "
                               "(no [index])")
        backbone = f"{current}.{name}"
        current = backbone if backbone in types else kind
