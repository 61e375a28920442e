"""The TerminologyCapabilities resource (R4) that `GET [base]/metadata?mode=terminology`
answers: the code systems the server can answer for (loaded ones with their versions,
the shipped ones, UCUM), the $expand parameters it honours, and whether $validate-code,
$translate and $closure are there.

    statement = await terminology_capabilities(store, ctx, base_url)

A backend without a concept store (MongoDB) lists the shipped content it cannot serve
as nothing: the code system list is empty and `expansion` is absent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fhir_server.errors import FHIRError

if TYPE_CHECKING:
    from fhir_server.storage.base import Context, ResourceStore

# the $expand parameters terminology.expand honours (others are refused or ignored)
EXPANSION_PARAMETERS = (
    "url", "valueSet", "valueSetVersion", "filter", "offset", "count", "activeOnly",
    "displayLanguage", "includeDesignations", "system-version", "force-system-version",
    "exclude-system",
)  # fmt: skip

MODES = ("full", "normative", "terminology")  # CapabilityStatement `mode` (R4 3.1.0.10)


def check_mode(mode: str | None) -> None:
    """400 naming a `mode` of GET /metadata that R4 does not define."""
    if mode is not None and mode not in MODES:
        raise FHIRError.simple(
            400, "value", f"Unknown mode '{mode}' for metadata: use one of {', '.join(MODES)}",
            "mode",
        )  # fmt: skip


async def _code_systems(store: ResourceStore, ctx: Context) -> list[dict[str, Any]]:
    from terminology import content, ucum
    from terminology.store import concept_store

    try:
        concepts = concept_store(store)
    except FHIRError:  # no concept store on this backend (terminology.store)
        return []
    versions: dict[str, list[str]] = {}
    for system in await concepts.systems(ctx):
        if system.source != "load":  # a client's CodeSystem: readable as a resource
            continue
        listed = versions.setdefault(system.url, [])
        if system.version and system.version not in listed:
            listed.append(system.version)
    for url in content.shipped_urls():  # loaded on first use or at `serve` start
        versions.setdefault(url, [])
    versions.setdefault(ucum.UCUM, [])
    out = []
    for url in sorted(versions):
        entry: dict[str, Any] = {"uri": url}
        if versions[url]:
            entry["version"] = [{"code": v} for v in sorted(versions[url])]
        out.append(entry)
    return out


async def terminology_capabilities(
    store: ResourceStore, ctx: Context, base_url: str
) -> dict[str, Any]:
    from fhir_server import __version__

    systems = await _code_systems(store, ctx)
    statement: dict[str, Any] = {
        "resourceType": "TerminologyCapabilities",
        "status": "active",
        "date": datetime.now(UTC).date().isoformat(),
        "kind": "instance",
        "software": {"name": "fhir-fusion", "version": __version__},
        "implementation": {"description": "fhir-fusion terminology service", "url": base_url},
        "codeSearch": "all",
    }
    if systems:
        statement["codeSystem"] = systems
        statement["expansion"] = {
            "hierarchical": False, "paging": True, "incomplete": False,
            "parameter": [{"name": name} for name in EXPANSION_PARAMETERS],
            "textFilter": "Each word starts a word of a display or designation (a filter that "
                          "looks like a code also matches code prefixes); case and accents "
                          "ignored; ranked phrase, adjacent words, whole words, prefixes.",
        }  # fmt: skip
        statement["validateCode"] = {"translations": False}
        statement["translation"] = {"needsMap": False}
    statement["closure"] = {"translation": False}  # $closure is not implemented
    return statement
