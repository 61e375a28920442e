"""An HL7v2 message -> a FHIR transaction Bundle.

Supported: ADT A01 A02 A03 A04 A05 A08 A11 A13 A28 A31 A40 and ORU^R01, versions 2.3
to 2.8. Everything else is refused (AR, table 0357 code 200/201/203). The mapping, and
where it deliberately differs from other converters, is in docs/hl7v2-mapping.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2 import tables
from adapters.hl7v2.bundle import BundleBuilder
from adapters.hl7v2.errors import (
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    UNSUPPORTED_VERSION_ID,
    Hl7Error,
    Location,
    rejected,
    warning_details,
)
from adapters.hl7v2.message import Message, Segment, parse
from adapters.hl7v2.patient import patient, replaced_patient
from adapters.hl7v2.results import diagnostic_report, observation, order_identifiers, report_key
from adapters.hl7v2.visit import encounter
from adapters.translation import Source, Translation
from terminology.standardise import StandardisationReport, standardise_observation

JSON = dict[str, Any]

EVENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0003"
FACILITY_SYSTEM = "urn:fhir-fusion:hl7v2:facility"
APPLICATION_PREFIX = "urn:fhir-fusion:hl7v2:application:"
MESSAGE_PREFIX = "urn:fhir-fusion:hl7v2:message:"

_VERSIONS = {"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1",
             "2.8.2"}


def translate_bytes(raw: bytes, options: dt.Hl7Options | None = None) -> Translation:
    """The pipeline's entry point for the "hl7v2" feed."""
    return translate(parse(raw), options or dt.Hl7Options())


def translator(options: dt.Hl7Options) -> Callable[[bytes], Translation]:
    """A translator for `Pipeline` with other options, e.g. the strict structure check:
    `Pipeline(store, {"hl7v2": translator(Hl7Options(check_structure=True))})`."""

    def translate_with_options(raw: bytes) -> Translation:
        return translate(parse(raw), options)

    return translate_with_options


def check_header(msg: Message) -> None:
    """MSH-9, MSH-10 and MSH-12 present and supported, else Hl7Error (AE or AR)."""
    msh = msg.msh
    if not msg.message_type:
        raise Hl7Error("MSH-9 message type is empty", REQUIRED_FIELD_MISSING, msh.loc(9, 1))
    if not msg.control_id:
        raise Hl7Error("MSH-10 message control id is empty", REQUIRED_FIELD_MISSING,
                       msh.loc(10))
    version = msg.version
    if not version:
        raise Hl7Error("MSH-12 version id is empty", REQUIRED_FIELD_MISSING, msh.loc(12))
    if version not in _VERSIONS:
        raise rejected(f"HL7 version {version} is not supported (2.3 to 2.8 are)",
                       UNSUPPORTED_VERSION_ID, msh.loc(12))
    kind, event = msg.message_type.upper(), msg.trigger_event.upper()
    if kind == "ADT":
        if not event:
            raise Hl7Error("MSH-9.2 trigger event is empty", REQUIRED_FIELD_MISSING,
                           msh.loc(9, 2))
        if event not in tables.ADT_EVENTS:
            raise rejected(f"ADT event {event} is not supported", UNSUPPORTED_EVENT_CODE,
                           msh.loc(9, 2))
    elif kind == "ORU":
        if event and event != "R01":
            raise rejected(f"ORU event {event} is not supported", UNSUPPORTED_EVENT_CODE,
                           msh.loc(9, 2))
    else:
        raise rejected(f"Message type {kind} is not supported (ADT and ORU^R01 are)",
                       UNSUPPORTED_MESSAGE_TYPE, msh.loc(9, 1))


def translate(msg: Message, options: dt.Hl7Options) -> Translation:
    check_header(msg)
    if options.check_structure:
        from adapters.hl7v2.structure import check_structure

        check_structure(msg)
    builder = BundleBuilder(f"{msg.msh.get(3)}|{msg.msh.get(4)}|{msg.control_id}")
    sender = dt.sender_system(msg.msh)
    org_url = _sender_organization(msg.msh, builder)
    warnings: list[Hl7Error] = []
    terminology = StandardisationReport(data_sources(msg.msh))
    if msg.message_type.upper() == "ADT":
        focus = _adt(msg, builder, sender, options)
    else:
        focus = _oru(msg, builder, sender, options, warnings, terminology)
    header = _message_header(msg, org_url, focus, options)
    builder.entries.insert(0, {"fullUrl": builder.full_url("MessageHeader"), "resource": header,
                               "request": {"method": "POST", "url": "MessageHeader"}})
    kind = f"{msg.message_type}^{msg.trigger_event}" if msg.trigger_event else msg.message_type
    app = msg.msh.get(3)
    source = Source(
        kind=f"HL7v2 {kind}",
        message_id=msg.control_id,
        message_system=MESSAGE_PREFIX + quote(app or "unknown", safe=""),
        sender=" / ".join(p for p in (app, msg.msh.get(4)) if p) or "unknown sender",
        sender_ref=org_url,
        occurred=header.get("_occurred"),
    )
    header.pop("_occurred", None)
    details: JSON = {"message_type": kind, "control_id": msg.control_id,
                     "version": msg.version}
    if builder.keep_existing:
        details["keep_existing"] = sorted(builder.keep_existing)
    if warnings:
        details["warnings"] = [warning_details(w) for w in warnings]
    if terminology.details():  # standard codes, canonical units, unmapped codes, warnings
        details["terminology"] = terminology.details()
    return Translation(builder.bundle(), source, details)


def data_sources(msh: Segment) -> tuple[str, ...]:
    """The names a source ConceptMap can give this sender (terminology/standardise.py),
    most specific first: "<MSH-4>/<MSH-3>", "<MSH-4>", "<MSH-3>"."""
    facility = msh.get(4) or msh.get(4, 2)
    application = msh.get(3) or msh.get(3, 2)
    names = [f"{facility}/{application}"] if facility and application else []
    return tuple(dict.fromkeys([*names, *(n for n in (facility, application) if n)]))


def _require(msg: Message, name: str) -> Segment:
    seg = msg.first(name)
    if seg is None:
        raise Hl7Error(f"Required segment {name} is missing", SEGMENT_SEQUENCE_ERROR,
                       Location(name, 1))
    return seg


def _adt(msg: Message, builder: BundleBuilder, sender: str, options: dt.Hl7Options) -> list[str]:
    event = msg.trigger_event.upper()
    pid = _require(msg, "PID")
    resource, key = patient(pid, sender, options)
    patient_key = f"Patient|{key['system']}|{key['value']}"
    patient_url = builder.full_url(patient_key)
    focus = [patient_url]
    if event == "A40":
        mrg = _require(msg, "MRG")
        old, old_key = replaced_patient(mrg, sender, patient_url)
        if old_key == key:
            raise Hl7Error("MRG-1 names the same patient as PID-3", REQUIRED_FIELD_MISSING,
                           mrg.loc(1))
        old_url = builder.full_url(f"Patient|{old_key['system']}|{old_key['value']}")
        resource["link"] = [{"other": {"reference": old_url}, "type": "replaces"}]
        builder.add(patient_key, resource, match=key)
        builder.add(f"Patient|{old_key['system']}|{old_key['value']}", old, match=old_key)
        builder.keep_existing.add(old_url)  # MRG does not say who the old patient is
        focus.append(old_url)
        return focus
    builder.add(patient_key, resource, match=key)
    pv1 = msg.first("PV1")
    if pv1 is not None and event not in {"A28", "A31"}:
        found = encounter(pv1, event, patient_url, builder, sender, options)
        if found is not None:
            enc, visit = found
            key_text = f"Encounter|{visit['system']}|{visit['value']}" if visit else "Encounter"
            focus.append(builder.add(key_text, enc, match=visit))
    return focus


def _oru(msg: Message, builder: BundleBuilder, sender: str, options: dt.Hl7Options,
         warnings: list[Hl7Error], terminology: StandardisationReport) -> list[str]:
    """Walk the segments in order: PID opens a patient, PV1 its visit, ORC/OBR a report,
    OBX a result of the current report."""
    focus: list[str] = []
    patient_url: str | None = None
    encounter_url: str | None = None
    orc: Segment | None = None
    obr: Segment | None = None
    report: JSON | None = None
    report_ident: JSON | None = None
    set_ids: set[str] = set()
    position = 0
    found_obr = found_obx = False

    for seg in msg.segments:
        name = seg.name
        if name == "PID":
            resource, key = patient(seg, sender, options)
            # A lab result must not overwrite the demographics ADT feeds keep: create the
            # patient only when no patient has this identifier.
            patient_url = builder.add(f"Patient|{key['system']}|{key['value']}", resource,
                                      match=key, create_only=True)
            encounter_url = None
            focus.append(patient_url)
        elif name == "PV1" and patient_url is not None:
            # Lab results do not update master data: visit and doctors are created when
            # unknown, as the patient is.
            found = encounter(seg, "", patient_url, builder, sender, options, master=False)
            enc, visit = found if found is not None else ({}, None)
            if visit is not None:
                encounter_url = builder.add(
                    f"Encounter|{visit['system']}|{visit['value']}", enc, match=visit,
                    create_only=True)
        elif name == "ORC":
            orc = seg
        elif name == "OBR":
            if patient_url is None:
                raise Hl7Error("OBR comes before any PID segment", SEGMENT_SEQUENCE_ERROR,
                               seg.loc())
            found_obr = True
            obr, position, set_ids = seg, 0, set()
            idents = order_identifiers(seg, orc, sender)
            orc = None
            report = diagnostic_report(seg, idents, options)
            report["subject"] = {"reference": patient_url}
            if encounter_url:
                report["encounter"] = {"reference": encounter_url}
            report["result"] = []
            report_ident = report_key(idents)
            report_key_text = (
                f"DiagnosticReport|{report_ident['system']}|{report_ident['value']}"
                if report_ident else f"DiagnosticReport|{seg.occurrence}")
            focus.append(builder.add(report_key_text, report, match=report_ident))
        elif name == "OBX" and report is not None:
            found_obx = True
            position += 1
            set_id = seg.get(1) or str(position)
            if set_id in set_ids:
                set_id = f"{set_id}.{position}"
            set_ids.add(set_id)
            obs = observation(seg, obr, options, warnings)
            standardise_observation(obs, terminology.sources, report=terminology)
            obs["subject"] = {"reference": patient_url}
            if encounter_url:
                obs["encounter"] = {"reference": encounter_url}
            match = None
            if report_ident is not None:
                match = {"system": report_ident["system"],
                         "value": f"{report_ident['value']}-obx{set_id}"}
                obs["identifier"] = [match]
            obs_key = f"Observation|{obr.occurrence if obr else 0}|{set_id}"
            report["result"].append({"reference": builder.add(obs_key, obs, match=match)})
        elif name == "NTE" and report is not None and report["result"]:
            _note(builder, report["result"][-1]["reference"], seg)

    if patient_url is None:
        raise Hl7Error("Required segment PID is missing", SEGMENT_SEQUENCE_ERROR,
                       Location("PID", 1))
    if not found_obr:
        raise Hl7Error("Required segment OBR is missing", SEGMENT_SEQUENCE_ERROR,
                       Location("OBR", 1))
    if not found_obx:
        raise Hl7Error("Required segment OBX is missing", SEGMENT_SEQUENCE_ERROR,
                       Location("OBX", 1))
    return focus


def _note(builder: BundleBuilder, observation_url: str, nte: Segment) -> None:
    """NTE-3 after an OBX becomes a note on that Observation."""
    text = "\n".join(rep[0][0] for rep in nte.reps(3) if rep and rep[0])
    if not text:
        return
    for entry in builder.entries:
        if entry["fullUrl"] == observation_url:
            entry["resource"].setdefault("note", []).append({"text": text})
            return


def _sender_organization(msh: Segment, builder: BundleBuilder) -> str | None:
    """MSH-4 sending facility -> Organization, matched on its HD."""
    namespace, uid, uid_type = msh.get(4, 1), msh.get(4, 2), msh.get(4, 3)
    if not (namespace or uid):
        return None
    if uid and uid_type.upper() in {"ISO", ""} and uid.replace(".", "").isdigit():
        ident = {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{uid}"}
    else:
        ident = {"system": FACILITY_SYSTEM, "value": namespace or uid}
    org: JSON = {"resourceType": "Organization", "identifier": [ident],
                 "name": namespace or uid}
    # Everything in it comes from its key, so an existing one never needs updating: a
    # conditional create costs the store one search instead of a compare-and-update.
    return builder.add(f"Organization|{ident['system']}|{ident['value']}", org, match=ident,
                       create_only=True)


def _message_header(msg: Message, org_url: str | None, focus: list[str],
                    options: dt.Hl7Options) -> JSON:
    msh = msg.msh
    app = msh.get(3) or msh.get(3, 2) or "unknown"
    header: JSON = {
        "resourceType": "MessageHeader",
        "eventCoding": {"system": EVENT_SYSTEM, "code": msg.trigger_event.upper() or "R01"},
        "source": {"name": app, "endpoint": APPLICATION_PREFIX + quote(app, safe="")},
        "focus": [{"reference": url} for url in focus],
    }
    software = msg.first("SFT")
    if software is not None and software.get(3):
        header["source"]["software"] = software.get(3)
        if software.get(2):
            header["source"]["version"] = software.get(2)
    receiver = msh.get(5)
    if receiver:
        header["destination"] = [{"name": receiver,
                                  "endpoint": APPLICATION_PREFIX + quote(receiver, safe="")}]
    if org_url:
        header["sender"] = {"reference": org_url}
    header["_occurred"] = dt.dtm(msh.get(7), msh.loc(7), options)
    return header
