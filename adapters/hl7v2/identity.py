"""Clinical data never changes patient silently: the identity checks made against the store
before a message's Bundle is stored.

A message's resources are found again by business identifiers (PID-3, PV1-19, OBR-3).
Those are only unique per patient in a perfect world: a lab system that restarts its
filler numbers, a test feed sharing a production MSH-4, or a PID-3 that lists the ids of
two registered patients would otherwise make a conditional update take over another
patient's record. So, before storing:

- a Patient entry's medical record numbers (the identifiers patients are matched on)
  must find no patient other than the one it is matched on (break-feeds F28): an A08
  whose PID-3 names two registered patients is a merge, which only A40 may do;
- a resource matched by its identifier (DiagnosticReport, Observation, Encounter) must
  belong to the patient the message names (F27).

Either failure is an AE with ERR-3 205 (table 0357, "Duplicate key identifier") naming the
field, never the values. The message is kept as rejected and can be re-processed once the
records are corrected. The check reads the store outside the write transaction: two
clashing messages processed at the very same moment are not caught by it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2.bundle import search_token
from adapters.hl7v2.errors import DUPLICATE_KEY_IDENTIFIER, Hl7Error, Location
from adapters.translation import StoreTranslator, Translation
from fhir_server.storage.base import Context, ResourceStore

JSON = dict[str, Any]

# Where a resource type's matching identifier comes from, for ERR-2.
_FIELDS = {"Encounter": Location("PV1", 1, 19), "Observation": Location("OBR", 1, 3)}


async def check_identity(store: ResourceStore, ctx: Context, translation: Translation) -> None:
    """Raise Hl7Error (AE 205) when the Bundle would give one patient's data to another or
    join two patients' identifiers; see the module docstring."""
    from fhir_server.operations import StoreReader, find_matches, parse_criteria

    reader = StoreReader(store, ctx)
    entries = translation.bundle["entry"]
    keep = set(translation.details.get("keep_existing", ()))

    async def matches(rtype: str, criteria: str) -> list[str]:
        found = await find_matches(reader, rtype, parse_criteria(rtype, criteria))
        return [f"{rtype}/{r.id}" for r in found]

    # The stored patient each Patient entry is (None: it will be created).
    patients: dict[str, str | None] = {}
    merge = any(e["resource"].get("link") for e in entries
                if e["resource"]["resourceType"] == "Patient")
    for entry in entries:
        resource, request = entry["resource"], entry["request"]
        if resource["resourceType"] != "Patient":
            continue
        criteria = _criteria(request)
        if criteria is None:
            patients[entry["fullUrl"]] = None
            continue
        where = Location("PID", 1, 3)
        found = await matches("Patient", criteria)
        if len(found) > 1:
            raise Hl7Error("PID-3 identifier is held by more than one patient; merge them "
                           "(A40) first", DUPLICATE_KEY_IDENTIFIER, where)
        current = found[0] if found else None
        patients[entry["fullUrl"]] = current
        if merge or entry["fullUrl"] in keep:
            continue  # an A40 joins patients on purpose
        others: set[str] = set()
        for ident in resource.get("identifier", []):
            if ident.get("value") and _is_record_number(ident):
                others.update(await matches("Patient", search_token(ident)))
        others.discard(current or "")
        if others:
            raise Hl7Error("PID-3 identifiers belong to more than one patient; send A40 to "
                           "merge patients", DUPLICATE_KEY_IDENTIFIER, where)

    for entry in entries:
        resource, request = entry["resource"], entry["request"]
        subject = resource.get("subject", {}).get("reference", "")
        if subject not in patients:
            continue
        criteria = _criteria(request)
        if criteria is None:
            continue
        rtype = resource["resourceType"]
        # only the business identifier: a patient-scoped criterion would hide the clash
        identifier_only = "&".join(p for p in criteria.split("&")
                                   if p.startswith("identifier="))
        if not identifier_only:
            continue
        found = await find_matches(reader, rtype, parse_criteria(rtype, identifier_only))
        owner = patients[subject]
        for stored in found:
            theirs = (stored.resource or {}).get("subject", {}).get("reference")
            if theirs and theirs != owner:
                where = _location(rtype, resource)
                raise Hl7Error(f"the identifier names a stored {rtype} of another patient; the "
                               "message is not stored (correct the identifier or the "
                               "patient)",
                               DUPLICATE_KEY_IDENTIFIER, where)


def _is_record_number(ident: JSON) -> bool:
    """A medical record number (CX-5 "MR"), which patients are matched on. Other ids
    (an SSN, a PID-2/PID-4 alternate) may be shared by one person's records at two
    facilities, and are not used to find a patient, so they cannot take one over."""
    return any(c.get("code") == "MR" for c in ident.get("type", {}).get("coding", []))


def _criteria(request: JSON) -> str | None:
    if request.get("ifNoneExist"):
        return str(request["ifNoneExist"])
    url = str(request.get("url", ""))
    return url.partition("?")[2] if request.get("method") == "PUT" and "?" in url else None


def _location(rtype: str, resource: JSON) -> Location:
    if rtype in _FIELDS:
        return _FIELDS[rtype]
    # a report is keyed on its filler number (OBR-3), or its placer number (OBR-2)
    kinds = {c.get("code") for i in resource.get("identifier", [])
             for c in i.get("type", {}).get("coding", [])}
    return Location("OBR", 1, 3 if "FILL" in kinds or not kinds else 2)


def checked_translator(options: dt.Hl7Options | None = None) -> StoreTranslator:
    """The pipeline's "hl7v2" translator: parse and translate in a worker thread (a big
    message is seconds of CPU), then the identity checks against the store."""
    from adapters.hl7v2.message import parse
    from adapters.hl7v2.translate import translate

    chosen = options or dt.Hl7Options()

    async def translate_checked(store: ResourceStore, ctx: Context, raw: bytes) -> Translation:
        translation = await asyncio.to_thread(lambda: translate(parse(raw), chosen))
        await check_identity(store, ctx, translation)
        return translation

    return StoreTranslator(translate_checked)
