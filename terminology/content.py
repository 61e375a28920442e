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
stored as resources. `install` loads everything at once, keeps a CodeSystem resource per
shipped system and stores the value sets as resources (so they are readable and
searchable); `serve` runs it in the background at start (`preload`).
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import importlib.metadata
import json
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from terminology.model import CodeSystemHeader, Concept, Designation

if TYPE_CHECKING:
    from fhir_server.storage.base import Context, ResourceStore
    from terminology.store import ConceptStore, LoadSummary, SystemInfo

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

log = logging.getLogger(__name__)

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


def shipped_urls() -> list[str]:
    """The urls of the code systems the server ships."""
    return [*_BUILTIN, *(u for u in fhir_content()["byUrl"] if u not in _BUILTIN)]


def source_of(url: str) -> Source | None:
    return _BUILTIN.get(url) or _fhir_source(url)


def shipped_value_set(url: str, version: str | None = None) -> dict[str, Any] | None:
    found = fhir_content()["valueSetsByUrl"].get(url)
    if found is None or (version is not None and found.get("version") != version):
        return None
    return {"resourceType": "ValueSet", **found}


_LOCKS: weakref.WeakKeyDictionary[object, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


async def ensure_code_system(
    concepts: ConceptStore, ctx: Context, url: str, *, keep_resource: bool = False
) -> LoadSummary | None:
    """Load the shipped code system `url` unless loaded already; None if none is shipped.

    A CodeSystem resource a client stored with this url does not count as loaded: the
    shipped content is loaded beside it and takes precedence (terminology.store).
    On the lazy path of an operation (a GET) nothing is written to the resources
    (`keep_resource` False): the CodeSystem resources standing for shipped content are
    written by `install` (at `serve` start), never as the side effect of a read."""
    source = source_of(url)
    if source is None:
        return None
    lock = _LOCKS.setdefault(concepts, {}).setdefault(url, asyncio.Lock())
    async with lock:  # one load at a time per system; later callers find it loaded
        if any(s.source == "load" for s in await concepts.systems(ctx, url)):
            return None
        header, rows = await asyncio.to_thread(_materialise, source)
        return await concepts.load_code_system(ctx, header, rows, keep_resource=keep_resource)


def _materialise(source: Source) -> tuple[CodeSystemHeader, list[Concept]]:
    header, rows = source()
    return header, list(rows)


async def install(
    store: ResourceStore, ctx: Context, progress: Callable[[str], object] | None = None
) -> dict[str, int]:
    """Load every shipped code system not loaded yet, keep a concept-less CodeSystem
    resource standing for each (searchable by url), and store the shipped value sets as
    resources under their own ids (those not stored yet); counts of what was done.

    Run by `fhir-fusion serve` in the background at start (`preload`), so the first
    request on ICD-10-CM does not pay its load and these resources are the server's own
    from the start, not the side effect of a client's read."""
    from terminology import resources
    from terminology.store import concept_store

    concepts = concept_store(store)
    loaded = value_sets = 0
    for url in shipped_urls():
        if await ensure_code_system(concepts, ctx, url, keep_resource=True) is not None:
            loaded += 1
            if progress is not None:
                progress(url)
            continue
        # loaded on an operation's lazy path before: its stand-in resource may be missing
        info = next((s for s in await concepts.systems(ctx, url) if s.source == "load"), None)
        if info is not None and not await resources.find(store, ctx, "CodeSystem", url):
            await resources.keep_code_system_resource(store, ctx, _header(info), info.count)
    for url, vs in fhir_content()["valueSetsByUrl"].items():
        if await resources.find(store, ctx, "ValueSet", url):
            continue
        body = {"resourceType": "ValueSet", **vs}
        taken = "id" in vs and await store.read(ctx, "ValueSet", vs["id"]) is not None
        async with store.transaction(ctx) as txn:
            if "id" in vs and not taken:
                await txn.update(body)  # the id the expansions of it carry
            else:
                await txn.create({k: v for k, v in body.items() if k != "id"})
        value_sets += 1
    return {"code_systems": loaded, "value_sets": value_sets}


def _header(info: SystemInfo) -> CodeSystemHeader:
    return CodeSystemHeader(
        url=info.url, version=info.version, name=info.name, title=info.title,
        status=info.status, content=info.content, hierarchy_meaning=info.hierarchy_meaning,
        copyright=info.copyright, language=info.language,
    )  # fmt: skip


PRELOAD_DELAY = 5.0  # seconds after `serve` starts


async def preload(store: ResourceStore, ctx: Context, delay: float = PRELOAD_DELAY) -> None:
    """`install` in the background of `serve` (ICD-10-CM first: its load is the slow
    one); a failure is logged, never raised: the lazy path still loads on first use.
    It starts `delay` seconds after the server, so a server started for a moment (a
    test, a health check) does not spend its life on it; the work is done once per
    database (later starts only check, well under a second)."""
    from fhir_server.errors import FHIRError

    try:
        await asyncio.sleep(delay)
        done = await install(store, ctx)
        log.info("terminology preloaded: %s", done)
    except asyncio.CancelledError:
        raise
    except FHIRError as exc:  # e.g. a standalone MongoDB server refuses writes: 501
        log.info("terminology not preloaded: %s", exc)
    except Exception:  # noqa: BLE001 - the server serves on; operations load lazily
        log.exception("terminology preload failed")
