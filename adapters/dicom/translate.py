"""A DICOM instance -> a transaction Bundle for the pipeline.

The pipeline's raw-input table does not hold the DICOM file: the file (up to hundreds
of megabytes for a multi-frame study) is kept in the content-addressed blob store, and
the raw input is a small reference to it, `{"blob":"sha256:<hex>","size":<n>}`. The
same file gives the same reference, so the pipeline's dedupe by SHA-256 still finds a
resent file; a retry from the dead-letter queue reads the file back from the blob store.

The Bundle for the first instance of a study: the Patient (conditional create on its
identifier, so a Patient the HL7v2 feed made is used as it is and not overwritten), the
DICOMweb Endpoint (conditional create, one per server) and the ImagingStudy (conditional
update on its Study Instance UID). For a later instance: only the stored ImagingStudy
with this instance merged in (`study.merge`), an update of the version it was read at.
"""

from __future__ import annotations

import json
from typing import Any

from pydicom.dataset import Dataset

from adapters.dicom import codes
from adapters.dicom.reading import DOES_NOT_MATCH, DicomInputError, read_dataset, text
from adapters.dicom.study import endpoint, imaging_study, merge, patient, patient_identifier
from adapters.dicom.study import uid_identifier
from adapters.hl7v2.bundle import BundleBuilder, search_token
from adapters.translation import Source, StoreTranslator, Translation, TranslationError
from fhir_server.storage.base import Context, ResourceStore
from fhir_server.storage.blobs import BlobRef, BlobStore, blob_store_for

FEED = "dicom"
DEFAULT_PUBLIC_BASE = "http://127.0.0.1:8080"
_public_base = [DEFAULT_PUBLIC_BASE]

JSON = dict[str, Any]


def set_public_base(url: str) -> None:
    """The server's address as clients reach it (scheme://host:port, no path), for the
    Endpoint's WADO-RS address; `serve` sets it from its HTTP address. The Endpoint is
    created once, with the address known then."""
    _public_base[0] = url.rstrip("/")


def wado_rs_base() -> str:
    return _public_base[0] + "/dicomweb"


def encode_reference(ref: BlobRef) -> bytes:
    return json.dumps({"blob": f"sha256:{ref.digest}", "size": ref.size},
                      separators=(",", ":"), sort_keys=True).encode("ascii")


def decode_reference(raw: bytes) -> tuple[str, int]:
    """(digest, size) of a kept DICOM input; raises TranslationError for anything else."""
    try:
        found = json.loads(raw.decode("ascii"))
        blob = found["blob"]
        if not isinstance(blob, str) or not blob.startswith("sha256:"):
            raise ValueError
        return blob.removeprefix("sha256:"), int(found["size"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise TranslationError("the dicom feed takes a blob reference "
                               "{\"blob\":\"sha256:...\",\"size\":n}, not the file itself; "
                               "send files through adapters.dicom.ingest_dicom_bytes") from None


def load_blob(blobs: BlobStore, raw: bytes) -> bytes:
    digest, _ = decode_reference(raw)
    try:
        data = blobs.get(digest)
    except ValueError:
        data = None
    if data is None:
        raise TranslationError(f"the DICOM file sha256:{digest} is not in the blob store "
                               f"{blobs.root}")
    return data


async def current_study(store: ResourceStore, ctx: Context, study_uid: str) -> JSON | None:
    from fhir_server.operations import StoreReader, find_matches, parse_criteria

    criteria = search_token(uid_identifier(study_uid))
    matches = await find_matches(StoreReader(store, ctx), "ImagingStudy",
                                 parse_criteria("ImagingStudy", criteria))
    if len(matches) > 1:
        raise TranslationError("more than one ImagingStudy has this Study Instance UID")
    return matches[0].resource if matches else None


async def translate_instance(store: ResourceStore, ctx: Context, ds: Dataset, ref: BlobRef,
                             sender: str) -> Translation:
    """The Bundle for one checked dataset (see `reading.read_dataset`)."""
    study_uid = text(ds, "StudyInstanceUID")
    builder = BundleBuilder(f"dicom|{ref.digest}")
    current = await current_study(store, ctx, study_uid)
    if current is not None and current.get("subject") and current.get("endpoint"):
        # a later instance of a known study: its Patient and Endpoint are linked already
        # (both are create-only), so the Bundle only updates the study
        patient_url = current["subject"]["reference"]
        endpoint_url = current["endpoint"][0]["reference"]
        await _check_same_patient(store, ctx, ds, patient_url)
    else:
        key = patient_identifier(ds)
        patient_url = builder.add(f"Patient|{key['system']}|{key['value']}",
                                  patient(ds, key), match=key, create_only=True)
        endpoint_resource = endpoint(wado_rs_base())
        endpoint_url = builder.add("Endpoint", endpoint_resource,
                                   match=endpoint_resource["identifier"][0], create_only=True)
    await _check_not_stored_otherwise(store, ctx, ds, current)
    new = imaging_study(ds, patient_url, endpoint_url)
    instance = new["series"][0]["instance"][0]
    instance.setdefault("extension", []).append(
        {"url": codes.FILE_SHA256, "valueString": f"sha256:{ref.digest}"})
    merged = merge(current, new)
    if current is None:
        builder.add("ImagingStudy", merged, match=uid_identifier(study_uid))
    else:
        # the version merged into: a change by anyone else meanwhile (a retry from the
        # dead-letter queue, another process) fails this transaction (412) instead of
        # being overwritten, and the input is kept as rejected, to be retried
        merged["id"] = current["id"]
        url = builder.full_url("ImagingStudy")
        builder.entries.append({
            "fullUrl": url, "resource": merged,
            "request": {"method": "PUT", "url": f"ImagingStudy/{current['id']}",
                        "ifMatch": f'W/"{current["meta"]["versionId"]}"'},
        })
    sop_uid = text(ds, "SOPInstanceUID")
    source = Source(
        kind=f"DICOM {text(ds, 'Modality') or 'instance'}",
        message_id=f"urn:oid:{sop_uid}",
        message_system=codes.DICOM_UID,
        sender=sender,
    )
    details: JSON = {
        "study": study_uid,
        "series": text(ds, "SeriesInstanceUID"),
        "instance": sop_uid,
        "sop_class": text(ds, "SOPClassUID"),
        "blob": f"sha256:{ref.digest}",
        "size": ref.size,
    }
    syntax = text(ds.file_meta, "TransferSyntaxUID") if hasattr(ds, "file_meta") else ""
    if syntax:
        details["transfer_syntax"] = syntax
    notes = warnings_for(ds)
    if notes:
        details["warnings"] = notes
    return Translation(builder.bundle(), source, details)


_DATES = (("StudyDate", "(0008,0020)"), ("SeriesDate", "(0008,0021)"),
          ("PatientBirthDate", "(0010,0030)"))


def warnings_for(ds: Dataset) -> list[str]:
    """What the instance holds that was not used, for a warning status (0xB006, Elements
    Discarded) and the input's details: never the values themselves."""
    from datetime import date

    from adapters.dicom.study import _date

    notes = []
    for keyword, tag in _DATES:
        value = text(ds, keyword)
        if not value:
            continue
        parsed = _date(value)
        if parsed is None:
            notes.append(f"{keyword} {tag} is not a valid date; not used")
        elif keyword == "PatientBirthDate" and parsed > date.today().isoformat():
            notes.append(f"{keyword} {tag} is in the future")
    if not text(ds, "PatientID"):
        notes.append("no PatientID (0010,0020): the patient is known by this study only")
    return notes


async def _check_same_patient(store: ResourceStore, ctx: Context, ds: Dataset,
                              patient_url: str) -> None:
    """An instance joins a stored study only when it is of the study's patient: a Study
    Instance UID reused for another patient (a copied UID, a modality worklist mix-up)
    would otherwise file one patient's images in another's record (break-feeds F26).
    Refused with 0xA900 and kept as rejected, to be re-processed once corrected."""
    key = patient_identifier(ds)
    rtype, _, rid = patient_url.partition("/")
    stored = await store.read(ctx, rtype, rid) if rtype == "Patient" and rid else None
    held = [(i.get("system"), i.get("value"))
            for i in ((stored.resource or {}).get("identifier", []) if stored else [])]
    if (key["system"], key["value"]) not in held:
        raise DicomInputError("this Study Instance UID belongs to a study of another "
                              "patient", DOES_NOT_MATCH)


async def _check_not_stored_otherwise(store: ResourceStore, ctx: Context, ds: Dataset,
                                      current: JSON | None) -> None:
    """A SOP Instance UID names one object (PS3.3 C.12.1.1.1): one already stored under
    another study, or stored with other attributes (a corrected object sent under the old
    UID), is refused (0xA900) and kept as rejected, so that nothing is dropped silently.
    The same object again (even in another transfer syntax) is taken as before."""
    from fhir_server.operations import StoreReader, find_matches, parse_criteria

    sop_uid = text(ds, "SOPInstanceUID")
    study_uid = text(ds, "StudyInstanceUID")
    holders = await find_matches(StoreReader(store, ctx), "ImagingStudy",
                                 parse_criteria("ImagingStudy", f"instance={sop_uid}"))
    if any(h.resource is not None and (current is None or h.resource.get("id") != current["id"])
           for h in holders):
        raise DicomInputError("this SOP Instance UID is already stored in another study "
                              f"than {study_uid}", DOES_NOT_MATCH)
    stored = _stored_file(current, sop_uid)
    if stored is None:
        return
    data = blob_store_for(store).get(stored)
    if data is None:
        return  # the first file is gone: nothing to compare with
    changed = _changed_attributes(read_dataset(data), ds)
    if changed:
        shown = ", ".join(changed[:3]) + (" ..." if len(changed) > 3 else "")
        raise DicomInputError(f"changed {shown} of a stored SOP Instance UID; send a "
                              "corrected object under a new UID", DOES_NOT_MATCH)


def _stored_file(study: JSON | None, sop_uid: str) -> str | None:
    from adapters.dicom.study import instance_file

    for series in (study or {}).get("series", []):
        for instance in series.get("instance", []):
            if instance.get("uid") == sop_uid:
                return instance_file(instance)
    return None


def _changed_attributes(before: Dataset, now: Dataset) -> list[str]:
    """The tags (never values) whose values differ, outside the file meta and the pixel
    data (another transfer syntax re-encodes those)."""
    # pixels, lossy compression, trailing padding: another encoding may change them
    ignored = {0x7FE00010, 0x00282110, 0x00282112, 0x00282114, 0xFFFCFFFC}
    tags = {e.tag for e in before} | {e.tag for e in now}
    changed = []
    for tag in sorted(tags):
        if tag.group == 0x0002 or tag.element == 0 or int(tag) in ignored:
            continue
        old = before[tag].value if tag in before else None
        new = now[tag].value if tag in now else None
        if old != new:
            changed.append(f"({tag.group:04X},{tag.element:04X})")
    return changed


async def translate_kept(store: ResourceStore, ctx: Context, raw: bytes) -> Translation:
    """The pipeline's translator for the dicom feed (used by retry): reads the file
    back from the blob store beside the store's database."""
    blobs = blob_store_for(store)
    data = load_blob(blobs, raw)
    digest, _ = decode_reference(raw)
    ds = read_dataset(data)
    ref = BlobRef(digest, len(data), blobs.path_for(digest))
    return await translate_instance(store, ctx, ds, ref, "dead-letter retry")


def translator() -> StoreTranslator:
    """The dicom feed's translator for `adapters.pipeline.DEFAULT_TRANSLATORS`."""
    return StoreTranslator(translate_kept)


__all__ = ["FEED", "DicomInputError", "decode_reference", "encode_reference",
           "set_public_base", "translate_instance", "translator", "wado_rs_base"]
