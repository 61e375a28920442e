"""Local codes to standard ones (e.g. LOINC) through a ConceptMap loaded in the store.

This is the one place the CSV adapter asks for a code translation, so that it can move
to the terminology service's $translate when that exists: `code_translator` is all the
rest of the adapter sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.storage.base import Context, ResourceStore

# ConceptMap equivalences (R4 concept-map-equivalence) under which a target may stand
# in for the source code; narrower, inexact, unmatched and disjoint may not.
USABLE = {"relatedto", "equivalent", "equal", "wider", "subsumes"}

Coding = dict[str, str]
CodeTranslator = Callable[[str, str | None], list[Coding]]


async def code_translator(store: ResourceStore, ctx: Context, concept_map: str) -> CodeTranslator:
    """The translations of the ConceptMap with this url (or, when none has it, of the
    ConceptMaps whose group.source is this system): a function from (code, source
    system) to the target Codings; none when there is no map or no match."""
    maps = await _find(store, ctx, "url", concept_map)
    if not maps:
        maps = await _find(store, ctx, "source-system", concept_map)
    table: dict[tuple[str | None, str], list[Coding]] = {}
    for resource in maps:
        for group in resource.get("group") or []:
            source = group.get("source")
            for element in group.get("element") or []:
                code = element.get("code")
                if not isinstance(code, str):
                    continue
                for target in element.get("target") or []:
                    if target.get("equivalence", "equivalent") not in USABLE or not target.get(
                            "code"):
                        continue
                    coding = {"system": group.get("target", ""), "code": target["code"]}
                    if target.get("display"):
                        coding["display"] = target["display"]
                    for key in ((source, code), (None, code)):
                        found = table.setdefault(key, [])
                        if coding not in found:
                            found.append(coding)

    def translate(code: str, system: str | None) -> list[Coding]:
        return table.get((system, code)) or table.get((None, code)) or []

    return translate


async def _find(store: ResourceStore, ctx: Context, param: str, value: str) -> list[dict[str, Any]]:
    from search.query import parse_search

    # uri parameters take the value as it is: no token escapes to apply
    page = await store.search(ctx, parse_search("ConceptMap", [(param, value), ("_count", "10")]))
    return [m.resource for m in page.resources if m.resource is not None]
