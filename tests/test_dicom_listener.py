"""The DICOM listener against a real pynetdicom SCU over a socket on 127.0.0.1
(ephemeral port): C-ECHO, C-STORE of real samples, resend, bad input answered with a
failure status, an association from an AE not on the allow-list rejected."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from adapters.dicom.scp import DicomListener, start_dicom_listener
from adapters.pipeline import Pipeline
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

DICOM = Path(__file__).resolve().parents[2] / "shared" / "samples" / "dicom"
CTX = Context(caller="dicom")


def scu(port: int, *, calling: str = "TESTSCU") -> Any:
    """An association from a real pynetdicom SCU, or the rejected attempt."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    for context in StoragePresentationContexts[:127]:
        ae.add_requested_context(context.abstract_syntax)
    return ae.associate("127.0.0.1", port, ae_title="FHIRFUSION")


def serve(tmp_path: Path, body: Callable[[DicomListener, SQLiteStore], Any],
          allowed: tuple[str, ...] = ()) -> None:
    async def go() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        listener = start_dicom_listener(Pipeline(store), CTX, "127.0.0.1", 0,
                                        allowed_callers=allowed)
        try:
            # the SCU blocks: it runs in a thread while this loop serves the store
            await asyncio.wait_for(asyncio.to_thread(body, listener, store), 120)
        finally:
            await asyncio.to_thread(listener.stop)
            await store.close()

    asyncio.run(go())


def test_echo_and_store_then_resend(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DICOM / "pydicom_CT_small.dcm")
    seen: dict[str, Any] = {}

    def body(listener: DicomListener, store: SQLiteStore) -> None:
        assoc = scu(listener.port)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(ds).Status == 0x0000
        assert assoc.send_c_store(ds).Status == 0x0000  # resent: success, nothing new
        assoc.release()
        seen["done"] = True

    serve(tmp_path, body)
    assert seen["done"]

    async def check() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        try:
            inputs = await store.list_inputs(CTX, feed="dicom", status="stored", limit=10)
            assert len(inputs) == 1  # the resend was a duplicate
            assert inputs[0].result is not None
            assert inputs[0].result["details"]["instance"] == ds.SOPInstanceUID
            history = (await store.history(CTX, "ImagingStudy", count=10))[1]
            assert history == 1  # one version: the resend changed nothing
        finally:
            await store.close()

    asyncio.run(check())


def test_a_study_sent_instance_by_instance(tmp_path: Path) -> None:
    names = sorted(DICOM.glob("study_77654033_*.dcm"))

    def body(listener: DicomListener, store: SQLiteStore) -> None:
        assoc = scu(listener.port)
        for path in names:
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
        assoc.release()

    serve(tmp_path, body)

    async def check() -> None:
        from fhir_server.operations import StoreReader, find_matches, parse_criteria

        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        try:
            matches = await find_matches(StoreReader(store, CTX), "ImagingStudy",
                                         parse_criteria("ImagingStudy", "modality=CT"))
            (study,) = [m.resource for m in matches]
            assert study is not None
            assert study["numberOfInstances"] == 4
            assert study["series"][0]["numberOfInstances"] == 4
        finally:
            await store.close()

    asyncio.run(check())


def test_bad_instance_gets_a_failure_status_and_is_kept(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DICOM / "pydicom_MR_small.dcm")
    ds.SpecificCharacterSet = "ISO_IR 999"  # unknown character set
    statuses: list[int] = []

    def body(listener: DicomListener, store: SQLiteStore) -> None:
        assoc = scu(listener.port)
        statuses.append(assoc.send_c_store(ds).Status)
        assoc.release()

    serve(tmp_path, body)
    assert statuses == [0xC000]

    async def check() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        try:
            (kept,) = await store.list_inputs(CTX, feed="dicom", status="rejected", limit=10)
            assert "unknown character set" in (kept.reason or "")
        finally:
            await store.close()

    asyncio.run(check())


def test_missing_sop_instance_uid_is_refused(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DICOM / "pydicom_MR_small.dcm")
    ds.StudyInstanceUID = ""  # present but empty: the dataset does not identify a study
    statuses: list[int] = []

    def body(listener: DicomListener, store: SQLiteStore) -> None:
        assoc = scu(listener.port)
        statuses.append(assoc.send_c_store(ds).Status)
        assoc.release()

    serve(tmp_path, body)
    assert statuses == [0xA900]


def test_caller_not_on_the_allow_list_is_rejected(tmp_path: Path) -> None:
    def body(listener: DicomListener, store: SQLiteStore) -> None:
        stranger = scu(listener.port, calling="STRANGER")
        assert stranger.is_rejected
        # A-ASSOCIATE-RJ: rejected permanent (1), service user (1), calling AE title
        # not recognised (3) (PS3.8 9.3.4)
        rj = stranger.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)
        friend = scu(listener.port, calling="MODALITY1")
        assert friend.is_established
        assert friend.send_c_echo().Status == 0x0000
        friend.release()

    serve(tmp_path, body, allowed=("MODALITY1",))


def test_accepted_sockets_have_tcp_nodelay(tmp_path: Path) -> None:
    flags: list[int] = []

    def body(listener: DicomListener, store: SQLiteStore) -> None:
        assoc = scu(listener.port)
        for thread_assoc in listener.server.active_associations:
            sock = thread_assoc.dul.socket.socket
            flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        assoc.release()

    serve(tmp_path, body)
    assert flags and all(flags)


def test_compressed_instance_is_stored_as_received(tmp_path: Path) -> None:
    data = (DICOM / "pydicom_JPEG2000.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    syntax = ds.file_meta.TransferSyntaxUID

    def body(listener: DicomListener, store: SQLiteStore) -> None:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(ds.SOPClassUID, [syntax])
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="FHIRFUSION")
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()

    serve(tmp_path, body)
    from fhir_server.storage.blobs import BlobStore

    kept = list((tmp_path / "blobs").rglob("*"))
    files = [p for p in kept if p.is_file()]
    assert len(files) == 1
    stored = pydicom.dcmread(files[0])
    assert stored.file_meta.TransferSyntaxUID == syntax  # JPEG 2000, not transcoded
    assert stored.PixelData == ds.PixelData
    assert BlobStore(tmp_path / "blobs").root.is_dir()


@pytest.fixture(autouse=True)
def _no_pynetdicom_noise() -> None:
    import logging

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
