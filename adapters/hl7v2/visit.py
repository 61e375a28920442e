"""PV1 -> Encounter, and the doctors it names -> Practitioner.

HL7 v2.5 chapter 3, section 3.4.3 (PV1). The Encounter is matched on the visit number
(PV1-19). A visit without a number is created as a new Encounter for ADT events and
left out of lab results (which have no way to find it again).
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2 import tables
from adapters.hl7v2.bundle import BundleBuilder
from adapters.hl7v2.message import Repetition, Segment, component

JSON = dict[str, Any]

PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

# PV1 fields naming doctors, with their v3 participation type.
_DOCTORS = ((7, "ATND", "attender"), (8, "REF", "referrer"), (9, "CON", "consultant"),
            (17, "ADM", "admitter"))


def practitioner_ref(rep: Repetition, builder: BundleBuilder, sender: str,
                     create_only: bool = False) -> JSON | None:
    """A Reference to the Practitioner an XCN names: a conditional update (or create, for
    feeds that must not overwrite master data) keyed on XCN-1 with its authority (XCN-9),
    or a display-only Reference when XCN-1 is empty."""
    name = dt.xcn_name(rep)
    display = dt.name_display(name) if name else ""
    value = component(rep, 1)
    if not value:
        return {"display": display} if display else None
    system = dt.hd_system(component(rep, 9, 1), component(rep, 9, 2), component(rep, 9, 3))
    ident: JSON = {"system": system or sender, "value": value}
    resource: JSON = {"resourceType": "Practitioner", "identifier": [ident]}
    if name:
        resource["name"] = [name]
    key = f"Practitioner|{ident['system']}|{value}"
    url = builder.add(key, resource, match=ident, create_only=create_only)
    ref: JSON = {"reference": url}
    if display:
        ref["display"] = display
    return ref


def location_display(rep: Repetition) -> str:
    """PL: point of care, room, bed, facility, building, floor, as one text."""
    parts = [component(rep, i) for i in (1, 2, 3)]
    facility = component(rep, 4)
    building, floor = component(rep, 7), component(rep, 8)
    text = " ".join(p for p in parts if p)
    extra = ", ".join(p for p in (building, floor, facility) if p)
    return f"{text} ({extra})" if text and extra else text or extra


def encounter(pv1: Segment, event: str, patient_url: str, builder: BundleBuilder,
              sender: str, options: dt.Hl7Options, *, master: bool = True
              ) -> tuple[JSON, JSON | None] | None:
    """The Encounter for a PV1 and the visit identifier it is matched on (None: create).
    `master` is False for lab results: the doctors they name are created when unknown,
    never updated."""
    visit = pv1.reps(19)
    visit_id = dt.identifier(visit[0], sender) if visit else None
    patient_class = pv1.get(2)
    if visit_id is None and not patient_class:
        return None

    code, display = tables.PATIENT_CLASS.get(patient_class.upper(), ("", ""))
    enc_class = ({"system": tables.V3_ACT_CODE, "code": code, "display": display} if code
                 else {"system": tables.V3_NULL_FLAVOR, "code": "UNK", "display": "unknown"})
    start = dt.dtm(pv1.get(44), pv1.loc(44), options)
    end = dt.dtm(pv1.get(45), pv1.loc(45), options)
    status = tables.ENCOUNTER_STATUS.get(event)
    if status is None:
        status = "finished" if end else "in-progress" if start else "unknown"

    resource: JSON = {"resourceType": "Encounter", "status": status, "class": enc_class,
                      "subject": {"reference": patient_url}}
    if visit_id is not None:
        resource["identifier"] = [visit_id]
    if start or end:
        resource["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    participants = []
    for field, code_, display_ in _DOCTORS:
        for rep in pv1.reps(field):
            ref = practitioner_ref(rep, builder, sender, create_only=not master)
            if ref is None:
                continue
            participants.append({
                "type": [{"coding": [{"system": PARTICIPATION, "code": code_,
                                      "display": display_}]}],
                "individual": ref,
            })
    if participants:
        resource["participant"] = participants
    location = pv1.reps(3)
    if location and location_display(location[0]):
        resource["location"] = [{"location": {"display": location_display(location[0])}}]
    service = pv1.get(10)
    if service:
        resource["serviceType"] = {"coding": [{"system": tables.V2_TABLE.format(69),
                                               "code": service}]}
    _hospitalization(resource, pv1)
    return resource, visit_id


def _hospitalization(resource: JSON, pv1: Segment) -> None:
    hosp: JSON = {}
    source = pv1.get(14)
    if source:
        hosp["admitSource"] = {"coding": [{"system": tables.V2_TABLE.format(23),
                                           "code": source}]}
    readmit = pv1.get(13)
    if readmit:
        hosp["reAdmission"] = {"coding": [{"system": tables.V2_TABLE.format(92),
                                           "code": readmit}]}
    disposition = pv1.get(36)
    if disposition:
        hosp["dischargeDisposition"] = {"coding": [{"system": tables.V2_TABLE.format(112),
                                                    "code": disposition}]}
    if hosp:
        resource["hospitalization"] = hosp
