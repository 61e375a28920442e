"""PID -> Patient and MRG (A40 merge) -> the replaced Patient.

HL7 v2.5 chapter 3, section 3.4.2 (PID) and 3.4.3 (MRG). Patients are matched on one
PID-3 identifier with its assigning authority: the first of type MR, else the first
given (`match_identifier`).
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2 import tables
from adapters.hl7v2.errors import REQUIRED_FIELD_MISSING, Hl7Error
from adapters.hl7v2.message import Segment

JSON = dict[str, Any]

BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"


def identifiers(seg: Segment, field: int, sender: str) -> list[JSON]:
    found = []
    for rep in seg.reps(field):
        ident = dt.identifier(rep, sender)
        if ident is not None and ident not in found:
            found.append(ident)
    return found


def match_identifier(idents: list[JSON]) -> JSON:
    for ident in idents:
        codes = [c.get("code") for c in ident.get("type", {}).get("coding", [])]
        if "MR" in codes:
            return ident
    return idents[0]


def patient(pid: Segment, sender: str, options: dt.Hl7Options) -> tuple[JSON, JSON]:
    """The Patient for a PID segment and the identifier it is matched on."""
    idents = identifiers(pid, 3, sender)
    if not idents:
        # v2.3 messages may carry the id in PID-2 (external id) only.
        idents = identifiers(pid, 2, sender)
    if not idents:
        raise Hl7Error("PID-3 patient identifier list is empty", REQUIRED_FIELD_MISSING,
                       pid.loc(3))
    key = match_identifier(idents)
    # PID-2 (external id, v2.3/2.4) and PID-4 (alternate id) are kept, never matched on.
    for extra in (*identifiers(pid, 2, sender), *identifiers(pid, 4, sender)):
        if extra not in idents:
            idents.append(extra)
    ssn = pid.get(19)
    if ssn:
        ssn_ident = {"system": "http://hl7.org/fhir/sid/us-ssn", "value": ssn}
        if all(i.get("value") != ssn for i in idents):
            idents.append(ssn_ident)

    resource: JSON = {"resourceType": "Patient", "identifier": idents, "active": True}
    names = [n for n in (dt.human_name(rep) for rep in pid.reps(5)) if n]
    if names:
        resource["name"] = names
    telecom = [t for t in (dt.contact_point(rep, "home") for rep in pid.reps(13)) if t]
    telecom += [t for t in (dt.contact_point(rep, "work") for rep in pid.reps(14)) if t]
    if telecom:
        resource["telecom"] = telecom
    gender = pid.get(8)
    if gender:
        resource["gender"] = tables.SEX.get(gender.upper(), "unknown")
    _birth(resource, pid, options)
    _deceased(resource, pid, options)
    addresses = [a for a in (dt.address(rep) for rep in pid.reps(11)) if a]
    if addresses:
        resource["address"] = addresses
    marital = pid.get(16)
    if marital:
        code, display = tables.MARITAL.get(marital.upper(), ("UNK", "unknown"))
        resource["maritalStatus"] = {
            "coding": [{"system": tables.V3_MARITAL, "code": code, "display": display}],
            "text": pid.get(16, 2) or display,
        }
    multiple = pid.get(24)
    order = pid.get(25)
    if order.isdigit():
        resource["multipleBirthInteger"] = int(order)
    elif multiple in {"Y", "N"}:
        resource["multipleBirthBoolean"] = multiple == "Y"
    return resource, key


def _birth(resource: JSON, pid: Segment, options: dt.Hl7Options) -> None:
    raw = pid.get(7)
    if not raw:
        return
    full = dt.dtm(raw, pid.loc(7), options)
    if full is None:
        return
    resource["birthDate"] = full.split("T")[0]
    digits = raw.split("+")[0].split("-")[0].split(".")[0]
    if "T" in full and len(digits) > 8 and int(digits[8:] or 0) != 0:
        resource["extension"] = [{"url": BIRTH_TIME, "valueDateTime": full}]


def _deceased(resource: JSON, pid: Segment, options: dt.Hl7Options) -> None:
    when = dt.dtm(pid.get(29), pid.loc(29), options)
    if when:
        resource["deceasedDateTime"] = when
    elif pid.get(30) in {"Y", "N"}:
        resource["deceasedBoolean"] = pid.get(30) == "Y"


def replaced_patient(mrg: Segment, sender: str, survivor_url: str) -> tuple[JSON, JSON]:
    """The patient MRG-1 names, made inactive and linked to the survivor. Only what MRG
    says about it is here; the pipeline lays it over the stored patient
    (`Translation.details["keep_existing"]`), so its demographics stay."""
    idents = identifiers(mrg, 1, sender)
    if not idents:
        raise Hl7Error("MRG-1 prior patient identifier list is empty", REQUIRED_FIELD_MISSING,
                       mrg.loc(1))
    resource: JSON = {
        "resourceType": "Patient",
        "identifier": idents,
        "active": False,
        "link": [{"other": {"reference": survivor_url}, "type": "replaced-by"}],
    }
    names = [n for n in (dt.human_name(rep) for rep in mrg.reps(7)) if n]
    if names:
        resource["name"] = names
    return resource, match_identifier(idents)
