"""A DICOM instance of another patient under a stored Study Instance UID is refused
(break-feeds F26), against a real pynetdicom SCU and a real SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid

from adapters.dicom.scp import DicomListener
from fhir_server.storage.sqlite import SQLiteStore
from search.query import parse_search
from tests.test_dicom_listener import CTX, DICOM, scu, serve


def instance(study: str, patient_id: str, name: str) -> Any:
    ds = pydicom.dcmread(DICOM / "pydicom_CT_small.dcm")
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName = patient_id, name
    return ds


def test_an_instance_of_another_patient_under_a_stored_study_uid_is_refused(
        tmp_path: Path) -> None:
    study = generate_uid()
    first = instance(study, "SAMESTUDY-P1", "First^Pat")
    second = instance(study, "SAMESTUDY-P2", "Second^Pat")
    same_patient = instance(study, "SAMESTUDY-P1", "First^Pat")
    answers: list[Any] = []

    def body(listener: DicomListener, store: SQLiteStore) -> None:
        assoc = scu(listener.port)
        answers.extend(assoc.send_c_store(d) for d in (first, second, same_patient))
        assoc.release()

    serve(tmp_path, body)
    assert [a.Status for a in answers] == [0x0000, 0xA900, 0x0000]
    comment = str(answers[1].ErrorComment)
    assert "belongs to a study of another patient" in comment
    assert "SAMESTUDY" not in comment and "Pat" not in comment

    async def check() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        try:
            page = await store.search(CTX, parse_search("ImagingStudy", []))
            (study_resource,) = [r.resource for r in page.resources if r.resource]
            assert study_resource["numberOfInstances"] == 2
            uids = {i["uid"] for s in study_resource["series"] for i in s["instance"]}
            assert second.SOPInstanceUID not in uids
            assert {first.SOPInstanceUID, same_patient.SOPInstanceUID} <= uids
            (kept,) = await store.list_inputs(CTX, feed="dicom", status="rejected")
            assert kept.reason and "another patient" in kept.reason
            assert "SAMESTUDY" not in kept.reason
        finally:
            await store.close()

    asyncio.run(check())
