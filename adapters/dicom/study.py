"""One DICOM instance as FHIR: its Patient, its ImagingStudy (with this one series and
instance) and the DICOMweb Endpoint; and the merge of an instance's ImagingStudy into
the one already stored, so that instances arriving one by one build up one study.

Patients are matched on Patient ID (0010,0020) scoped by Issuer of Patient ID
(0010,0021) and its qualifiers (0010,0024), turned into an identifier system by the
same rule the HL7v2 feed applies to PID-3's assigning authority (`hd_system`): a DICOM
issuer "HOSP" and an HL7v2 CX-4 "HOSP" give the same system, hence the same Patient.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from pydicom.dataset import Dataset

from adapters.dicom import codes
from adapters.dicom.names import human_names
from adapters.dicom.reading import text
from adapters.hl7v2.datatypes import AUTHORITY_PREFIX, hd_system

JSON = dict[str, Any]

SEX = {"M": "male", "F": "female", "O": "other"}


def uid_identifier(uid: str) -> JSON:
    return {"system": codes.DICOM_UID, "value": f"urn:oid:{uid}"}


def patient_identifier(ds: Dataset) -> JSON:
    """The identifier a DICOM patient is matched on (see the module docstring)."""
    value = text(ds, "PatientID")
    if not value:
        return {"system": codes.STUDY_PATIENT_SYSTEM, "value": text(ds, "StudyInstanceUID")}
    issuer = text(ds, "IssuerOfPatientID")
    universal_id = universal_type = ""
    qualifiers = ds.get("IssuerOfPatientIDQualifiersSequence")
    if qualifiers:
        universal_id = text(qualifiers[0], "UniversalEntityID")
        universal_type = text(qualifiers[0], "UniversalEntityIDType")
    system = hd_system(issuer, universal_id, universal_type)
    if system is None:
        # HL7v2 scopes such an id by the sending facility; the DICOM counterpart is the
        # Institution Name, when the modality sends one
        institution = text(ds, "InstitutionName")
        system = (AUTHORITY_PREFIX + quote(institution, safe="") if institution
                  else codes.UNKNOWN_ISSUER_SYSTEM)
    return {"system": system, "value": value}


def patient(ds: Dataset, key: JSON) -> JSON:
    resource: JSON = {"resourceType": "Patient", "identifier": [key], "active": True}
    names = human_names(ds.get("PatientName"))
    if names:
        resource["name"] = names
    sex = text(ds, "PatientSex").upper()
    if sex:
        resource["gender"] = SEX.get(sex, "unknown")
    birth = _date(text(ds, "PatientBirthDate"))
    if birth:
        resource["birthDate"] = birth
    return resource


def endpoint(address: str) -> JSON:
    return {
        "resourceType": "Endpoint",
        "identifier": [{"system": codes.ENDPOINT_SYSTEM, "value": "dicomweb"}],
        "status": "active",
        "connectionType": {"system": codes.ENDPOINT_CONNECTION, "code": "dicom-wado-rs",
                           "display": "DICOM WADO-RS"},
        "name": "fhir-fusion DICOMweb (WADO-RS)",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def imaging_study(ds: Dataset, patient_url: str, endpoint_url: str) -> JSON:
    """The ImagingStudy of one instance: the study with this instance's series only."""
    study_uid = text(ds, "StudyInstanceUID")
    modality = text(ds, "Modality").upper()
    resource: JSON = {
        "resourceType": "ImagingStudy",
        "identifier": [uid_identifier(study_uid)],
        "status": "available",
        "subject": {"reference": patient_url},
        "endpoint": [{"reference": endpoint_url}],
    }
    accession = text(ds, "AccessionNumber")
    if accession:
        ident = {"type": {"coding": [{"system": codes.V2_0203, "code": "ACSN"}]},
                 "value": accession}
        resource["identifier"].append(ident)
        # the order this study fulfils, by the identifier the order feed gives it
        resource["basedOn"] = [{"type": "ServiceRequest", "identifier": ident}]
    study_id = text(ds, "StudyID")
    if study_id:
        resource["identifier"].append({"system": "urn:fhir-fusion:dicom:study-id",
                                       "value": study_id})
    if modality:
        resource["modality"] = [_modality(modality)]
    started = _date_time(ds, "StudyDate", "StudyTime")
    if started:
        resource["started"] = started
    referrer = human_names(ds.get("ReferringPhysicianName"))
    if referrer:
        resource["referrer"] = {"display": referrer[0]["text"]}
    procedure = [c for c in (_code(item) for item in ds.get("ProcedureCodeSequence") or [])
                 if c]
    if procedure:
        resource["procedureCode"] = [{"coding": [c], "text": c.get("display", c["code"])}
                                     for c in procedure]
    description = text(ds, "StudyDescription")
    if description:
        resource["description"] = description
    resource["series"] = [_series(ds, modality, endpoint_url)]
    _count(resource)
    return resource


def _series(ds: Dataset, modality: str, endpoint_url: str) -> JSON:
    series: JSON = {"uid": text(ds, "SeriesInstanceUID")}
    number = _int(ds, "SeriesNumber")
    if number is not None:
        series["number"] = number
    series["modality"] = _modality(modality or "OT")
    description = text(ds, "SeriesDescription")
    if description:
        series["description"] = description
    series["endpoint"] = [{"reference": endpoint_url}]
    body = text(ds, "BodyPartExamined").upper()
    if body:
        known = codes.BODY_PART.get(body.replace(" ", ""))
        series["bodySite"] = ({"system": codes.SNOMED, "code": known[0], "display": known[1]}
                              if known else {"system": codes.BODY_PART_TEXT, "code": body,
                                             "display": body})
    side = (text(ds, "Laterality") or text(ds, "ImageLaterality")).upper()
    if side in codes.LATERALITY:
        code, display = codes.LATERALITY[side]
        series["laterality"] = {"system": codes.SNOMED, "code": code, "display": display}
    started = _date_time(ds, "SeriesDate", "SeriesTime")
    if started:
        series["started"] = started
    series["instance"] = [_instance(ds)]
    return series


def _instance(ds: Dataset) -> JSON:
    instance: JSON = {
        "uid": text(ds, "SOPInstanceUID"),
        "sopClass": {"system": codes.RFC3986, "code": "urn:oid:" + text(ds, "SOPClassUID")},
    }
    name = getattr(ds.SOPClassUID, "name", "")
    if name and name != text(ds, "SOPClassUID"):
        instance["sopClass"]["display"] = name
    frames = _int(ds, "NumberOfFrames")
    if frames is not None:
        instance["extension"] = [{"url": codes.NUMBER_OF_FRAMES, "valueInteger": frames}]
    number = _int(ds, "InstanceNumber")
    if number is not None:
        instance["number"] = number
    title = text(ds, "ContentLabel") or text(ds, "DocumentTitle")
    if title:
        instance["title"] = title
    return instance


def merge(current: JSON | None, new: JSON) -> JSON:
    """`new` (one instance's study) laid over the stored study: series and instances
    joined by UID (a resent instance replaces itself), study-level values kept from the
    stored one where the new instance has none, counts recomputed. Series and instances
    are ordered by number then UID, so the result does not depend on arrival order and
    a resent instance gives the very same resource (stored as 'unchanged')."""
    if current is None:
        return new
    merged = {k: v for k, v in current.items() if k not in ("id", "meta", "text")}
    for key, value in new.items():
        if key in ("series", "identifier", "modality", "basedOn", "procedureCode",
                   "endpoint"):
            continue
        merged.setdefault(key, value)
    # the stored references are resolved ids, the new ones bundle fullUrls of the same
    # Patient and Endpoint (matched by identifier): keep the stored ones
    merged["subject"] = current.get("subject", new["subject"])
    merged["endpoint"] = current.get("endpoint") or new["endpoint"]
    for key in ("identifier", "modality", "basedOn", "procedureCode"):
        items = list(current.get(key, []))
        items += [item for item in new.get(key, []) if item not in items]
        if items:
            merged[key] = items
    series = {s["uid"]: s for s in current.get("series", [])}
    for incoming in new.get("series", []):
        existing = series.get(incoming["uid"])
        if existing is None:
            series[incoming["uid"]] = incoming
            continue
        joined = {**incoming, **{k: v for k, v in existing.items() if k != "instance"}}
        instances = {i["uid"]: i for i in existing.get("instance", [])}
        for inst in incoming.get("instance", []):
            instances[inst["uid"]] = _keep_file(instances.get(inst["uid"]), inst)
        joined["instance"] = sorted(instances.values(), key=_order)
        series[incoming["uid"]] = joined
    merged["series"] = sorted(series.values(), key=_order)
    _count(merged)
    return merged


def _keep_file(before: JSON | None, inst: JSON) -> JSON:
    """A resent instance keeps the file it was first stored with: the same instance in
    other bytes (another transfer syntax) changes nothing, WADO-RS serves the first."""
    if before is None:
        return inst
    kept = [e for e in before.get("extension", []) if e["url"] == codes.FILE_SHA256]
    if not kept:
        return inst
    others = [e for e in inst.get("extension", []) if e["url"] != codes.FILE_SHA256]
    return {**inst, "extension": others + kept}


def instance_file(instance: JSON) -> str | None:
    """The blob digest (hex) of an ImagingStudy.series.instance, if it names one."""
    for ext in instance.get("extension", []):
        if ext.get("url") == codes.FILE_SHA256:
            value = str(ext.get("valueString", ""))
            return value.removeprefix("sha256:") if value.startswith("sha256:") else None
    return None


def _order(item: JSON) -> tuple[int, str]:
    number = item.get("number")
    return (number if isinstance(number, int) else 1 << 31, item["uid"])


def _count(study: JSON) -> None:
    for series in study.get("series", []):
        series["numberOfInstances"] = len(series.get("instance", []))
    study["numberOfSeries"] = len(study.get("series", []))
    study["numberOfInstances"] = sum(s["numberOfInstances"] for s in study.get("series", []))


def _modality(code: str) -> JSON:
    coding = {"system": codes.DCM, "code": code}
    if code in codes.MODALITY_DISPLAY:
        coding["display"] = codes.MODALITY_DISPLAY[code]
    return coding


def _code(item: Dataset) -> JSON | None:
    value = text(item, "CodeValue") or text(item, "LongCodeValue") or text(item, "URNCodeValue")
    if not value:
        return None
    scheme = text(item, "CodingSchemeDesignator").upper()
    system = codes.CODING_SCHEMES.get(scheme) or codes.LOCAL_SCHEME_PREFIX + quote(scheme or
                                                                                   "unknown")
    coding: JSON = {"system": system, "code": value}
    meaning = text(item, "CodeMeaning")
    if meaning:
        coding["display"] = meaning
    return coding


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _date(value: str) -> str | None:
    value = value.strip()
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        datetime(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None
    return f"{value[:4]}-{value[4:6]}-{value[6:]}"


def _date_time(ds: Dataset, date_keyword: str, time_keyword: str) -> str | None:
    """A DA + TM pair as a FHIR dateTime. A time needs a zone in FHIR: Timezone Offset
    From UTC (0008,0201) when sent, else UTC, as the HL7v2 feed assumes by default."""
    date = _date(text(ds, date_keyword))
    if date is None:
        return None
    tm = text(ds, time_keyword).replace(":", "")
    digits = tm.split(".")[0]
    if len(digits) < 2 or not digits.isdigit():
        return date
    hour, minute, second = digits[:2], digits[2:4] or "00", digits[4:6] or "00"
    if int(hour) > 23 or int(minute) > 59 or int(second) > 60:
        return date
    second = "59" if second == "60" else second
    frac = tm.split(".")[1][:6] if "." in tm and tm.split(".")[1].isdigit() else ""
    offset = text(ds, "TimezoneOffsetFromUTC")
    zone = "Z"
    if len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        zone = f"{offset[:3]}:{offset[3:]}"
    return f"{date}T{hour}:{minute}:{second}{'.' + frac if frac else ''}{zone}"
