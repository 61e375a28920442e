"""DICOM instances through the pipeline on a real SQLite store: every shared sample is
stored or rejected with its reason; ImagingStudy, Patient and Endpoint values are read
back from the store and compared with what pydicom reads from the same file."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from adapters.dicom import ingest_dicom_bytes
from adapters.dicom.names import REPRESENTATION
from adapters.pipeline import IngestResult, Pipeline
from fhir_server.storage.base import Context
from fhir_server.storage.blobs import blob_store_for
from fhir_server.storage.sqlite import SQLiteStore

DICOM = Path(__file__).resolve().parents[2] / "shared" / "samples" / "dicom"
CTX = Context()
T = TypeVar("T")
JSON = dict[str, Any]

# Every sample that is not stored, with the reason it is rejected.
REJECTED = {
    # its first byte is stray, so read without the file meta it yields no dataset
    "pydicom_no_meta.dcm": "no 'DICM' file meta header, and no dataset with "
                           "StudyInstanceUID (0020,000D)",
    # a private-sequence test dataset with no study, series or instance at all
    "pydicom_priv_SQ.dcm": "missing StudyInstanceUID (0020,000D)",
}


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 120))


def read(name: str) -> Dataset:
    return pydicom.dcmread(DICOM / name)


def encode(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def variant(name: str, **changes: Any) -> bytes:
    """The sample with some elements changed (None deletes), as a Part 10 file."""
    ds = read(name)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return encode(ds)


class Env:
    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.pipeline = Pipeline(store)

    async def ingest(self, data: bytes) -> IngestResult:
        return await ingest_dicom_bytes(self.pipeline, CTX, data, source="test")

    async def search(self, rtype: str, criteria: str = "") -> list[JSON]:
        from fhir_server.operations import StoreReader, find_matches, parse_criteria

        # every resource of the type when no criteria are given
        criteria = criteria or "_lastUpdated=gt1900-01-01"
        matches = await find_matches(StoreReader(self.store, CTX), rtype,
                                     parse_criteria(rtype, criteria))
        return [m.resource for m in matches if m.resource is not None]

    async def study(self, uid: str) -> JSON:
        found = await self.search("ImagingStudy", f"identifier=urn:dicom:uid|urn:oid:{uid}")
        assert len(found) == 1
        return found[0]


def scenario(tmp_path: Path, body: Any) -> None:
    async def go() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        try:
            await body(Env(store))
        finally:
            await store.close()

    run(go())


@pytest.mark.parametrize("name", sorted(p.name for p in DICOM.glob("*.dcm")))
def test_every_sample_is_stored_or_rejected_with_its_reason(tmp_path: Path, name: str) -> None:
    data = (DICOM / name).read_bytes()

    async def body(env: Env) -> None:
        result = await env.ingest(data)
        if name in REJECTED:
            assert result.status == "rejected"
            assert REJECTED[name] in (result.reason or "")
            kept = await env.store.get_input(CTX, result.input_id)  # type: ignore[arg-type]
            assert kept is not None and kept.status == "rejected"
            assert REJECTED[name] in (kept.reason or "")
            return
        assert result.status == "stored", result.reason
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        study = await env.study(ds.StudyInstanceUID)
        series = {s["uid"]: s for s in study["series"]}[ds.SeriesInstanceUID]
        instance = {i["uid"]: i for i in series["instance"]}[ds.SOPInstanceUID]
        assert instance["sopClass"] == {**instance["sopClass"], "system": "urn:ietf:rfc:3986",
                                        "code": f"urn:oid:{ds.SOPClassUID}"}
        assert series["modality"]["code"] == ds.Modality
        assert series["modality"]["system"] == "http://dicom.nema.org/resources/ontology/DCM"
        assert study["numberOfSeries"] == 1 and study["numberOfInstances"] == 1

    scenario(tmp_path, body)


def test_no_meta_header_is_read_with_force_when_it_parses(tmp_path: Path) -> None:
    """Decision: data without the Part 10 header is taken when pydicom reads the three
    UIDs from it (rtstruct.dcm, implicit VR without meta); otherwise rejected."""
    data = (DICOM / "pydicom_rtstruct.dcm").read_bytes()
    assert data[128:132] != b"DICM"

    async def body(env: Env) -> None:
        result = await env.ingest(data)
        assert result.status == "stored"
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        study = await env.study(ds.StudyInstanceUID)
        assert study["series"][0]["modality"]["code"] == "RTSTRUCT"

    scenario(tmp_path, body)


def test_ct_study_from_four_instances(tmp_path: Path) -> None:
    names = sorted(p.name for p in DICOM.glob("study_77654033_CT2_*.dcm"))
    first = read(names[0])

    async def body(env: Env) -> None:
        for name in reversed(names):  # arrival order must not matter
            assert (await env.ingest((DICOM / name).read_bytes())).status == "stored"
        study = await env.study(first.StudyInstanceUID)
        assert study["numberOfSeries"] == 1
        assert study["numberOfInstances"] == 4
        assert study["description"] == "CT, HEAD/BRAIN WO CONTRAST" == first.StudyDescription
        # StudyDate 19950903, StudyTime 173032, Timezone Offset From UTC +0000
        assert study["started"] == "1995-09-03T17:30:32+00:00"
        assert study["modality"] == [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                      "code": "CT", "display": "Computed Tomography"}]
        assert {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                     "code": "ACSN"}]}, "value": "2"} in study["identifier"]
        assert study["basedOn"][0]["type"] == "ServiceRequest"
        assert study["basedOn"][0]["identifier"]["value"] == first.AccessionNumber
        series = study["series"][0]
        assert series["uid"] == first.SeriesInstanceUID
        assert series["description"] == "Routine Brain"
        assert series["numberOfInstances"] == 4
        # Body Part Examined HEAD -> SNOMED CT 69536005 (PS3.16 Annex L)
        assert series["bodySite"] == {"system": "http://snomed.info/sct", "code": "69536005",
                                      "display": "Head"}
        numbers = [i["number"] for i in series["instance"]]
        assert numbers == sorted(int(read(n).InstanceNumber) for n in names)
        assert series["instance"][0]["sopClass"]["code"] == "urn:oid:1.2.840.10008.5.1.4.1.1.2"
        patients = await env.search("Patient")
        assert len(patients) == 1
        assert patients[0]["name"][0]["family"] == "Doe"
        assert patients[0]["name"][0]["given"] == ["Archibald"]
        assert study["subject"]["reference"] == f"Patient/{patients[0]['id']}"
        endpoints = await env.search("Endpoint")
        assert len(endpoints) == 1
        assert endpoints[0]["connectionType"]["code"] == "dicom-wado-rs"
        assert endpoints[0]["address"].endswith("/dicomweb")
        assert study["endpoint"] == [{"reference": f"Endpoint/{endpoints[0]['id']}"}]

    scenario(tmp_path, body)


def test_cr_study_with_three_series(tmp_path: Path) -> None:
    names = sorted(p.name for p in DICOM.glob("study_77654033_CR*.dcm"))

    async def body(env: Env) -> None:
        for name in names:
            await env.ingest((DICOM / name).read_bytes())
        study = await env.study(read(names[0]).StudyInstanceUID)
        assert study["numberOfSeries"] == 3 and study["numberOfInstances"] == 3
        assert sorted(s["uid"] for s in study["series"]) == sorted(
            read(n).SeriesInstanceUID for n in names)
        # CSPINE -> 122494005 Cervical spine
        assert {s["bodySite"]["code"] for s in study["series"]} == {"122494005"}
        # both studies of patient 77654033 name the same Patient
        await env.ingest((DICOM / "study_77654033_CT2_17106.dcm").read_bytes())
        assert len(await env.search("Patient")) == 1

    scenario(tmp_path, body)


def test_resending_an_instance_changes_nothing(tmp_path: Path) -> None:
    data = (DICOM / "pydicom_CT_small.dcm").read_bytes()
    ds = read("pydicom_CT_small.dcm")

    async def body(env: Env) -> None:
        first = await env.ingest(data)
        assert first.status == "stored"
        again = await env.ingest(data)
        assert again.status == "duplicate" and again.input_id == first.input_id
        # the same instance in other bytes (implicit VR): stored, but no new version
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        other = io.BytesIO()
        ds.save_as(other, implicit_vr=True, little_endian=True, enforce_file_format=True)
        assert other.getvalue() != data
        before = await env.study(ds.StudyInstanceUID)
        third = await env.ingest(other.getvalue())
        assert third.status == "stored"
        after = await env.study(ds.StudyInstanceUID)
        assert after["meta"]["versionId"] == before["meta"]["versionId"] == "1"

    scenario(tmp_path, body)


def test_concurrent_instances_of_one_study_all_end_up_in_it(tmp_path: Path) -> None:
    base = read("pydicom_CT_small.dcm")
    series = generate_uid()
    files = []
    for n in range(8):
        base.SOPInstanceUID = generate_uid()
        base.SeriesInstanceUID = series
        base.InstanceNumber = n + 1
        files.append(encode(base))

    async def body(env: Env) -> None:
        results = await asyncio.gather(*(env.ingest(f) for f in files))
        assert [r.status for r in results] == ["stored"] * 8
        study = await env.study(base.StudyInstanceUID)
        assert study["numberOfInstances"] == 8
        assert [i["number"] for i in study["series"][0]["instance"]] == list(range(1, 9))

    scenario(tmp_path, body)


def test_original_file_is_kept_in_the_blob_store(tmp_path: Path) -> None:
    data = (DICOM / "pydicom_MR_small.dcm").read_bytes()

    async def body(env: Env) -> None:
        result = await env.ingest(data)
        kept = await env.store.get_input(CTX, result.input_id)  # type: ignore[arg-type]
        assert kept is not None
        # the raw-input table holds a reference, the file is in the blob store
        import hashlib
        import json

        digest = hashlib.sha256(data).hexdigest()
        assert json.loads(kept.content) == {"blob": f"sha256:{digest}", "size": len(data)}
        assert blob_store_for(env.store).get(digest) == data
        assert (tmp_path / "blobs").is_dir()

    scenario(tmp_path, body)


# --- bad input -------------------------------------------------------------------------

BAD = [
    (b"MSH|^~\\&|not dicom at all\r", "not a DICOM file"),
    (b"", "empty input"),
    ((DICOM / "pydicom_CT_small.dcm").read_bytes()[:30000], "truncated: Pixel Data"),
    ((DICOM / "pydicom_CT_small.dcm").read_bytes()[:400], "missing StudyInstanceUID"),
    (variant("pydicom_CT_small.dcm", SOPInstanceUID=None), "missing SOPInstanceUID (0008,0018)"),
    (variant("pydicom_CT_small.dcm", SeriesInstanceUID=None),
     "missing SeriesInstanceUID (0020,000E)"),
    (variant("pydicom_CT_small.dcm", StudyInstanceUID="1.2.abc"), "not a valid UID"),
    (variant("pydicom_CT_small.dcm", SpecificCharacterSet="ISO_IR 999"),
     "unknown character set in Specific Character Set (0008,0005)"),
]


@pytest.mark.parametrize("data,reason", BAD, ids=[r for _, r in BAD])
def test_bad_input_is_kept_as_rejected_with_its_reason(tmp_path: Path, data: bytes,
                                                       reason: str) -> None:
    async def body(env: Env) -> None:
        result = await env.ingest(data)
        assert result.status == "rejected"
        assert reason in (result.reason or "")
        assert getattr(result.error, "status", 0) in (0xC000, 0xA900)
        listed = await env.pipeline.rejected(CTX, feed="dicom")
        assert [r.id for r in listed] == [result.input_id]
        assert not await env.search("ImagingStudy")

    scenario(tmp_path, body)


# --- character sets and person names --------------------------------------------------

def _names(patient: JSON) -> list[tuple[str | None, str, list[str]]]:
    out = []
    for name in patient["name"]:
        codes = [e["valueCode"] for e in name.get("extension", []) if e["url"] == REPRESENTATION]
        out.append((codes[0] if codes else None, name.get("family", ""), name.get("given", [])))
    return out


@pytest.mark.parametrize("name,expected", [
    # ISO_IR 100 (Latin-1): 'Buc^J\xe9r\xf4me' (pydicom_charset_FileInfo.txt)
    ("pydicom_charset_chrFren.dcm", [(None, "Buc", ["Jérôme"])]),
    # ISO_IR 144 (Cyrillic)
    ("pydicom_charset_chrRuss.dcm", [(None, "Люкceмбypг", [])]),
    # ISO_IR 192 (UTF-8): Wang^XiaoDong=王^小東=
    ("pydicom_charset_chrX1.dcm", [("ABC", "Wang", ["XiaoDong"]), ("IDE", "王", ["小東"])]),
    # ISO 2022 IR 87: Yamada^Tarou=山田^太郎=やまだ^たろう
    ("pydicom_charset_chrH31.dcm", [("ABC", "Yamada", ["Tarou"]), ("IDE", "山田", ["太郎"]),
                                    ("SYL", "やまだ", ["たろう"])]),
])
def test_person_names_in_each_character_set(tmp_path: Path, name: str,
                                            expected: list[Any]) -> None:
    async def body(env: Env) -> None:
        assert (await env.ingest((DICOM / name).read_bytes())).status == "stored"
        (patient,) = await env.search("Patient")
        assert _names(patient) == expected

    scenario(tmp_path, body)


def _constructed(charset: str | list[str], raw_name: bytes) -> bytes:
    """A minimal Secondary Capture instance whose Patient's Name is `raw_name` encoded
    in `charset` (the bytes of pydicom_charset_FileInfo.txt for chrX2 and chrI2)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.PatientID = "CHARSET1"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    # append Patient's Name (0010,0010) PN with the raw bytes, explicit VR LE; it sorts
    # after every element above except the UIDs of group 0020, so rebuild in order
    ds2 = pydicom.dcmread(io.BytesIO(data))
    ds2.add_new(0x00100010, "PN", raw_name)
    out = io.BytesIO()
    ds2.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_gb18030_and_iso2022_ir149_names(tmp_path: Path) -> None:
    gb = _constructed("GB18030", b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=")
    korean = _constructed(["", "ISO 2022 IR 149"],
                          b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7="
                          b"\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf")

    async def body(env: Env) -> None:
        assert (await env.ingest(gb)).status == "stored"
        (patient,) = await env.search("Patient")
        assert _names(patient) == [("ABC", "Wang", ["XiaoDong"]), ("IDE", "王", ["小东"])]
        assert patient["name"][1]["text"] == "王小东"

    scenario(tmp_path, body)

    async def body2(env: Env) -> None:
        assert (await env.ingest(korean)).status == "stored"
        (patient,) = await env.search("Patient")
        assert _names(patient) == [("ABC", "Hong", ["Gildong"]), ("IDE", "洪", ["吉洞"]),
                                   ("SYL", "홍", ["길동"])]

    (tmp_path / "k").mkdir()
    scenario(tmp_path / "k", body2)


# --- the same Patient as the HL7v2 feed -------------------------------------------------

ADT = ("MSH|^~\\&|ADT|HOSP|FHIR|FUSION|20240101120000||ADT^A04|MSG0001|P|2.5\r"
       "PID|1||77654033^^^HOSP^MR||Doe^Archibald||19600101|M\r")


def test_dicom_patient_is_the_hl7v2_patient_when_identifiers_agree(tmp_path: Path) -> None:
    dicom = variant("study_77654033_CT2_17106.dcm", IssuerOfPatientID="HOSP")
    other_issuer = variant("study_77654033_CR1_6154.dcm", IssuerOfPatientID="ELSEWHERE")

    async def body(env: Env) -> None:
        hl7 = await env.pipeline.ingest(CTX, "hl7v2", ADT.encode())
        assert hl7.status == "stored", hl7.reason
        (before,) = await env.search("Patient")
        assert (await env.ingest(dicom)).status == "stored"
        (after,) = await env.search("Patient")
        # the HL7v2 Patient is used as it is (conditional create), not overwritten
        assert after["id"] == before["id"] and after["meta"]["versionId"] == "1"
        assert after["birthDate"] == "1960-01-01"
        study = await env.study(read("study_77654033_CT2_17106.dcm").StudyInstanceUID)
        assert study["subject"]["reference"] == f"Patient/{before['id']}"
        # the same Patient ID from another issuer is another patient
        assert (await env.ingest(other_issuer)).status == "stored"
        assert len(await env.search("Patient")) == 2

    scenario(tmp_path, body)


def test_issuer_qualifiers_give_the_oid_system_hl7v2_gives_cx4(tmp_path: Path) -> None:
    """Issuer of Patient ID Qualifiers (0010,0024): Universal Entity ID + type ISO is
    the HD of CX-4 (&2.16.840.1.113883.19.5&ISO), system urn:oid:..."""
    ds = read("pydicom_MR_small.dcm")
    item = Dataset()
    item.UniversalEntityID = "2.16.840.1.113883.19.5"
    item.UniversalEntityIDType = "ISO"
    ds.IssuerOfPatientIDQualifiersSequence = [item]
    adt = ADT.replace("77654033^^^HOSP^MR", f"{ds.PatientID}^^^&2.16.840.1.113883.19.5&ISO^MR")

    async def body(env: Env) -> None:
        assert (await env.pipeline.ingest(CTX, "hl7v2", adt.encode())).status == "stored"
        assert (await env.ingest(encode(ds))).status == "stored"
        (patient,) = await env.search("Patient")
        assert {"system": "urn:oid:2.16.840.1.113883.19.5", "value": ds.PatientID} in [
            {k: i[k] for k in ("system", "value")} for i in patient["identifier"]]

    scenario(tmp_path, body)


def test_a_kept_input_is_reprocessed_from_the_blob_store(tmp_path: Path) -> None:
    """A DICOM input kept as rejected (here: as if the store had failed) is retried by a
    fresh Pipeline, as `fhir-fusion deadletter retry` does: the translator reads the file
    back from the blob store beside the database."""
    from adapters.dicom import prepare_instance
    from adapters.dicom.translate import encode_reference

    data = (DICOM / "pydicom_MR_small.dcm").read_bytes()

    async def body(env: Env) -> None:
        ref, _ = prepare_instance(blob_store_for(env.store), data)
        kept = await env.pipeline.keep_rejected(CTX, "dicom", encode_reference(ref),
                                                "internal error while storing (simulated)")
        retried = await Pipeline(env.store).retry(CTX, kept.input_id)  # type: ignore[arg-type]
        assert retried.status == "stored", retried.reason
        study = await env.study(read("pydicom_MR_small.dcm").StudyInstanceUID)
        assert study["numberOfInstances"] == 1
        # the file itself is not an input of the dicom feed: it takes references
        wrong = await env.pipeline.ingest(CTX, "dicom", data)
        assert wrong.status == "rejected"
        assert "blob reference" in (wrong.reason or "")

    scenario(tmp_path, body)


def test_procedure_code_laterality_frames_and_referrer(tmp_path: Path) -> None:
    """Elements the samples do not carry, set on a real instance: Procedure Code
    Sequence (0008,1032), Laterality (0020,0060), Referring Physician's Name (0008,0090);
    and Number of Frames (0028,0008) from the multi-frame enhanced MR sample."""
    ds = read("pydicom_MR_small.dcm")
    code = Dataset()
    code.CodeValue = "24627-2"
    code.CodingSchemeDesignator = "LN"
    code.CodeMeaning = "Chest CT"
    ds.ProcedureCodeSequence = [code]
    ds.Laterality = "L"
    ds.ReferringPhysicianName = "Smith^Anna^^Dr"
    ds.BodyPartExamined = "KNEE"
    multi = (DICOM / "pydicom-data_emri_small.dcm").read_bytes()
    frames = int(pydicom.dcmread(io.BytesIO(multi)).NumberOfFrames)

    async def body(env: Env) -> None:
        assert (await env.ingest(encode(ds))).status == "stored"
        study = await env.study(ds.StudyInstanceUID)
        assert study["procedureCode"] == [{"coding": [{"system": "http://loinc.org",
                                                       "code": "24627-2",
                                                       "display": "Chest CT"}],
                                           "text": "Chest CT"}]
        series = study["series"][0]
        # CID 244: Left 7771000; PS3.16 Annex L: KNEE 72696002
        assert series["laterality"] == {"system": "http://snomed.info/sct",
                                        "code": "7771000", "display": "Left"}
        assert series["bodySite"]["code"] == "72696002"
        assert study["referrer"] == {"display": "Dr Anna Smith"}
        assert (await env.ingest(multi)).status == "stored"
        other = await env.study(pydicom.dcmread(io.BytesIO(multi)).StudyInstanceUID)
        instance = other["series"][0]["instance"][0]
        assert {"url": "urn:fhir-fusion:extension:dicom-number-of-frames",
                "valueInteger": frames} in instance["extension"]
        assert frames > 1

    scenario(tmp_path, body)


def test_a_study_changed_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    """A later instance updates the ImagingStudy at the version it merged into: when
    another writer changed the study in between (a dead-letter retry, another process),
    the update fails (412) and the input is kept as rejected, to be retried, instead of
    dropping the other writer's instance."""
    from adapters.dicom import prepare_instance
    from adapters.dicom.translate import encode_reference, translate_instance

    base = read("pydicom_CT_small.dcm")
    files = []
    for n in range(3):
        base.SOPInstanceUID = generate_uid()
        base.InstanceNumber = n + 1
        files.append(encode(base))

    async def body(env: Env) -> None:
        assert (await env.ingest(files[0])).status == "stored"
        ref, ds = prepare_instance(blob_store_for(env.store), files[1])
        assert isinstance(ds, Dataset)
        stale = await translate_instance(env.store, CTX, ds, ref, "test")  # read at v1
        assert (await env.ingest(files[2])).status == "stored"  # v2, by another writer
        late = await env.pipeline.ingest(CTX, "dicom", encode_reference(ref),
                                         translation=stale)
        assert late.status == "rejected"
        assert (late.reason or "").startswith("FHIR 412")
        study = await env.study(base.StudyInstanceUID)
        assert study["numberOfInstances"] == 2  # instances 1 and 3, nothing lost
        retried = await env.pipeline.retry(CTX, late.input_id)  # type: ignore[arg-type]
        assert retried.status == "stored"
        assert (await env.study(base.StudyInstanceUID))["numberOfInstances"] == 3

    scenario(tmp_path, body)


def test_two_studies_with_one_uid_is_a_kept_rejection_not_a_crash(tmp_path: Path) -> None:
    """Two ImagingStudy resources with the same Study Instance UID (written by hand over
    REST, say): the instance cannot say which to update; it is kept as rejected."""
    data = (DICOM / "pydicom_MR_small.dcm").read_bytes()
    ds = read("pydicom_MR_small.dcm")

    async def body(env: Env) -> None:
        for _ in range(2):
            async with env.store.transaction(CTX) as txn:
                await txn.create({"resourceType": "ImagingStudy", "status": "available",
                                  "identifier": [{"system": "urn:dicom:uid",
                                                  "value": f"urn:oid:{ds.StudyInstanceUID}"}],
                                  "subject": {"display": "someone"}})
        result = await env.ingest(data)
        assert result.status == "rejected"
        assert "more than one ImagingStudy" in (result.reason or "")

    scenario(tmp_path, body)
