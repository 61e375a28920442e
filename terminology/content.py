"""The terminology content the server ships, loaded into the concept store on first use.

- FHIR R4 code systems and value sets (terminology/data/fhir-r4-terminology.json.gz,
  made by scripts/generate_terminology.py from `hl7.terminology.r4` and the FHIR core
  valuesets.json; CC0).
- A curated LOINC subset (terminology/data/loinc-subset.csv: common laboratory tests
  and vital signs, long common names, some Chinese displays; LOINC licence notice).
- ICD-10-CM from the `simple-icd-10-cm` package (public domain; chapters and blocks
  are concepts too, so the hierarchy is chapter > block > category > subcategory).
- UCUM is a grammar, answered by terminology.ucum rather than loaded.

`ensure_code_system` loads one of these the first time its url is asked for (a few ms
for a FHIR code system; about 10 s for ICD-10-CM on an idle machine, most of it
the package parsing its XML); `shipped_value_set` answers value set urls that are not
stored as resources. `install` loads everything at once and stores the value sets as
resources (so they are searchable), for an operator who wants that up front.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import importlib.metadata
import json
import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from terminology.model import CodeSystemHeader, Concept, Designation

if TYPE_CHECKING:
    from fhir_server.storage.base import Context, ResourceStore
    from terminology.store import ConceptStore, LoadSummary

DATA = Path(__file__).resolve().parent / "data"
FHIR_CONTENT = DATA / "fhir-r4-terminology.json.gz"
LOINC_SUBSET = DATA / "loinc-subset.csv"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"

LOINC_NOTICE = (
    "This material contains content from LOINC (http://loinc.org). LOINC is copyright "
    "(c) 1995-2025, Regenstrief Institute, Inc. and the Logical Observation Identifiers "
    "Names and Codes (LOINC) Committee and is available at no cost under the license at "
    "http://loinc.org/license. LOINC(R) is a registered United States trademark of "
    "Regenstrief Institute, Inc."
)
ICD10CM_NOTICE = (
    "ICD-10-CM is published by the U.S. National Center for Health Statistics (CDC) and "
    "is in the public domain; taken from the simple-icd-10-cm package."
)
THO_NOTICE = "HL7 Terminology (THO) and FHIR R4 content: CC0 1.0, HL7 International."

Source = Callable[[], tuple[CodeSystemHeader, Iterable[Concept]]]


@cache
def fhir_content() -> dict[str, Any]:
    with gzip.open(FHIR_CONTENT, "rt", encoding="utf-8") as f:
        content: dict[str, Any] = json.load(f)
    content["byUrl"] = {cs["url"]: cs for cs in content["codeSystems"]}
    content["valueSetsByUrl"] = {vs["url"]: vs for vs in content["valueSets"]}
    return content


def _fhir_source(url: str) -> Source | None:
    entry = fhir_content()["byUrl"].get(url)
    if entry is None:
        return None

    def source() -> tuple[CodeSystemHeader, Iterable[Concept]]:
        header = CodeSystemHeader(
            url=url, version=entry.get("version"), name=entry.get("name") or url,
            title=entry.get("title"), status=entry.get("status", "active"),
            content=entry.get("content", "complete"),
            hierarchy_meaning=entry.get("hierarchyMeaning") or "is-a", copyright=THO_NOTICE,
        )  # fmt: skip
        return header, (_fhir_concept(row) for row in entry["concepts"])

    return source


def _fhir_concept(row: list[Any]) -> Concept:
    code, display, parents = row[0], row[1], row[2]
    designations = tuple(
        Designation(value, language, None, use) for language, use, value in
        (row[3] if len(row) > 3 else ())
    )  # fmt: skip
    return Concept(code, display, None, designations, tuple(parents), {},
                   active=not (len(row) > 4 and row[4]))  # fmt: skip


def loinc_subset() -> tuple[CodeSystemHeader, Iterable[Concept]]:
    header = CodeSystemHeader(
        url=LOINC, version=None, name="LOINC", title="LOINC (curated subset)",
        content="fragment", copyright=LOINC_NOTICE,
    )  # fmt: skip

    def concepts() -> Iterator[Concept]:
        with LOINC_SUBSET.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                designations = [Designation(row["display"], "en", "http://loinc.org",
                                            "LONG_COMMON_NAME")]  # fmt: skip
                if row["display_zh"]:
                    designations.append(Designation(row["display_zh"], "zh-CN"))
                props: dict[str, tuple[object, ...]] = {"category": (row["category"],)}
                if row["example_unit"]:
                    props["EXAMPLE_UCUM_UNITS"] = (row["example_unit"],)
                yield Concept(row["code"], row["display"], designations=tuple(designations),
                              properties=props)  # fmt: skip

    return header, concepts()


def icd10cm() -> tuple[CodeSystemHeader, Iterable[Concept]]:
    import simple_icd_10_cm as cm  # parses its XML on import (seconds): only when needed

    version = importlib.metadata.version("simple-icd-10-cm")
    header = CodeSystemHeader(
        url=ICD10CM, version=None, name="ICD10CM",
        title=f"ICD-10-CM (release shipped by simple-icd-10-cm {version})",
        hierarchy_meaning="is-a", copyright=ICD10CM_NOTICE,
    )  # fmt: skip

    def concepts() -> Iterator[Concept]:
        for code in cm.get_all_codes(True):
            parent = cm.get_parent(code)
            grouping = cm.is_chapter_or_block(code)
            yield Concept(
                code, cm.get_description(code), parents=(parent,) if parent else (),
                properties={"notSelectable": (True,)} if grouping else {},
            )  # fmt: skip

    return header, concepts()


_BUILTIN: dict[str, Source] = {LOINC: loinc_subset, ICD10CM: icd10cm}


def source_of(url: str) -> Source | None:
    return _BUILTIN.get(url) or _fhir_source(url)


def shipped_value_set(url: str, version: str | None = None) -> dict[str, Any] | None:
    found = fhir_content()["valueSetsByUrl"].get(url)
    if found is None or (version is not None and found.get("version") != version):
        return None
    return {"resourceType": "ValueSet", **found}


_LOCKS: weakref.WeakKeyDictionary[object, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


async def ensure_code_system(
    concepts: ConceptStore, ctx: Context, url: str
) -> LoadSummary | None:
    """Load the shipped code system `url` unless loaded already; None if none is shipped."""
    source = source_of(url)
    if source is None:
        return None
    lock = _LOCKS.setdefault(concepts, {}).setdefault(url, asyncio.Lock())
    async with lock:  # one load at a time per system; later callers find it loaded
        if await concepts.system(ctx, url) is not None:
            return None
        header, rows = await asyncio.to_thread(_materialise, source)
        return await concepts.load_code_system(ctx, header, rows)


def _materialise(source: Source) -> tuple[CodeSystemHeader, list[Concept]]:
    header, rows = source()
    return header, list(rows)


async def install(
    store: ResourceStore, ctx: Context, progress: Callable[[str], object] | None = None
) -> dict[str, int]:
    """Load every shipped code system not loaded yet, and store the shipped value sets
    as resources (those not stored yet); counts of what was done."""
    from terminology import resources
    from terminology.store import concept_store

    concepts = concept_store(store)
    loaded = value_sets = 0
    for url in [*_BUILTIN, *fhir_content()["byUrl"]]:
        if await ensure_code_system(concepts, ctx, url) is not None:
            loaded += 1
            if progress is not None:
                progress(url)
    for url, vs in fhir_content()["valueSetsByUrl"].items():
        if await resources.find(store, ctx, "ValueSet", url):
            continue
        async with store.transaction(ctx) as txn:
            await txn.create({"resourceType": "ValueSet", **vs})
        value_sets += 1
    return {"code_systems": loaded, "value_sets": value_sets}
