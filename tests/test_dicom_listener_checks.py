"""The DICOM listener's checks against a real pynetdicom SCU (break-feeds F6, F7, F17):
the called AE title, Error Comment on failures, the Affected SOP Instance UID, and a SOP
Instance UID sent again with other content or under another study."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

from adapters.dicom.scp import DicomListener
from fhir_server.storage.sqlite import SQLiteStore
from tests.test_dicom_listener import CTX, DICOM, scu, serve


def ct() -> Any:
    ds = pydicom.dcmread(DICOM / "pydicom_CT_small.dcm")
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    return ds


def rejected(tmp_path: Path) -> list[str]:
    async def read() -> list[str]:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        try:
            kept = await store.list_inputs(CTX, feed="dicom", status="rejected", limit=10)
            return [k.reason or "" for k in kept]
        finally:
            await store.close()

    return asyncio.run(read())


def test_an_association_to_another_called_ae_title_is_rejected(tmp_path: Path) -> None:
    def body(listener: DicomListener, store: SQLiteStore) -> None:
        ae = AE(ae_title="CT1")
        ae.add_requested_context("1.2.840.10008.1.1")
        wrong = ae.associate("127.0.0.1", listener.port, ae_title="WRONGAE")
        assert wrong.is_rejected
        # A-ASSOCIATE-RJ: rejected permanent, service user, called AE title not recognised
        rj = wrong.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x07)

    serve(tmp_path, body)


def test_a_changed_object_under_a_stored_sop_uid_is_refused_with_a_comment(
        tmp_path: Path) -> None:
    first = ct()
    changed = ct()
    changed.SOPInstanceUID = first.SOPInstanceUID
    changed.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    changed.StudyInstanceUID, changed.SeriesInstanceUID = (first.StudyInstanceUID,
                                                           first.SeriesInstanceUID)
    first.PatientName = "Leakydicom^Zelda"
    changed.PatientName = "Other^Name"
    other_study = ct()
    other_study.SOPInstanceUID = first.SOPInstanceUID
    other_study.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    answers: list[Any] = []

    def body(listener: DicomListener, store: SQLiteStore) -> None:
        assoc = scu(listener.port)
        answers.extend(assoc.send_c_store(d) for d in (first, first, changed, other_study))
        assoc.release()

    serve(tmp_path, body)
    assert [a.Status for a in answers] == [0x0000, 0x0000, 0xA900, 0xA900]
    comment = str(answers[2].ErrorComment)
    assert comment.startswith("changed (0010,0010) of a stored SOP Instance UID")
    assert "Zelda" not in comment and "Other" not in comment
    assert len(comment) <= 64
    assert "already stored in another study" in str(answers[3].ErrorComment)
    reasons = rejected(tmp_path)  # both kept in the dead-letter queue, newest first
    assert len(reasons) == 2 and "another study" in reasons[0]


def test_an_affected_sop_uid_other_than_the_datasets_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # sent from the file as it is: the command's UID is then the file meta's
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    ds = ct()
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # pynetdicom sends this one
    path = tmp_path / "mismatch.dcm"
    ds.save_as(path)  # (enforce_file_format would set the meta UID from the dataset)
    answers: list[Any] = []

    def body(listener: DicomListener, store: SQLiteStore) -> None:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="FHIRFUSION")
        answers.append(assoc.send_c_store(str(path)))
        assoc.release()

    serve(tmp_path, body)
    assert answers[0].Status == 0xA900
    assert "Affected SOP Instance UID differs" in str(answers[0].ErrorComment)
    (reason,) = rejected(tmp_path)
    assert "(0008,0018)" in reason


def test_a_failure_status_carries_an_error_comment(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DICOM / "pydicom_MR_small.dcm")
    ds.SpecificCharacterSet = "ISO_IR 999"  # unknown character set
    answers: list[Any] = []

    def body(listener: DicomListener, store: SQLiteStore) -> None:
        assoc = scu(listener.port)
        answers.append(assoc.send_c_store(ds))
        assoc.release()

    serve(tmp_path, body)
    assert answers[0].Status == 0xC000
    assert "unknown character set" in str(answers[0].ErrorComment)


def test_pydicom_warnings_do_not_put_element_values_in_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = ct()
    ds.FrameOfReferenceUID = "not-a-uid.Leaky"  # pydicom: "Invalid value for VR UI: ..."
    ds.PatientID = "Leakyid\x01"
    answers: list[Any] = []

    def body(listener: DicomListener, store: SQLiteStore) -> None:
        assoc = scu(listener.port)
        answers.append(assoc.send_c_store(ds))
        assoc.release()

    with caplog.at_level(logging.DEBUG):
        serve(tmp_path, body)
    assert answers[0].Status is not None
    assert "Leaky" not in caplog.text
    assert any(r.name.startswith("pydicom") for r in caplog.records)  # reported, withheld


def test_unusable_dates_and_a_missing_patient_id_are_a_warning_naming_them(
        tmp_path: Path) -> None:
    bad_dates, no_id = ct(), ct()
    bad_dates.StudyDate = "20241399"
    bad_dates.PatientBirthDate = "19759999"
    del no_id.PatientID
    answers: list[Any] = []

    def body(listener: DicomListener, store: SQLiteStore) -> None:
        assoc = scu(listener.port)
        answers.extend(assoc.send_c_store(d) for d in (bad_dates, no_id, ct()))
        assoc.release()

    serve(tmp_path, body)
    # stored (0xB006 is a warning: Elements Discarded), and the comment names the elements
    assert [a.Status for a in answers] == [0xB006, 0xB006, 0x0000]
    assert str(answers[0].ErrorComment).startswith("StudyDate (0008,0020) is not a valid da")
    assert "PatientID (0010,0020)" in str(answers[1].ErrorComment)
    assert rejected(tmp_path) == []


def test_idle_associations_do_not_keep_other_senders_out(tmp_path: Path) -> None:
    import time

    async def go() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        from adapters.dicom.scp import start_dicom_listener
        from adapters.pipeline import Pipeline

        listener = start_dicom_listener(Pipeline(store), CTX, "127.0.0.1", 0,
                                        idle_timeout=5.0)

        def body() -> None:
            idle = []
            for n in range(12):  # more than pynetdicom's default limit of 10
                idle.append(scu(listener.port, calling=f"IDLE{n}"))
                assert idle[-1].is_established
            other = scu(listener.port, calling="CT1")
            assert other.is_established and other.send_c_echo().Status == 0x0000
            other.release()
            time.sleep(8)  # silent for longer than the idle timeout: aborted by the SCP
            assert not any(a.is_established for a in idle)

        try:
            await asyncio.wait_for(asyncio.to_thread(body), 60)
        finally:
            await asyncio.to_thread(listener.stop)
            await store.close()

    asyncio.run(go())
