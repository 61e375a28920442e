"""`fhir-fusion serve` with its DICOM listener, as a real process on 127.0.0.1
(ephemeral ports): C-STORE from a real SCU, SIGKILL right after the success status,
restart: the instance, its ImagingStudy and its file are all there (WADO-RS)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from test_e2e_process import ServerProcess, free_port  # tests/, on the path via conftest

DICOM = Path(__file__).resolve().parents[2] / "shared" / "samples" / "dicom"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def test_stored_instances_survive_sigkill(tmp_path: Path) -> None:
    dicom_port = free_port()
    server = ServerProcess(tmp_path / "data", "--dicom-port", str(dicom_port),
                           "--dicom-ae", "ARCHIVE")
    names = sorted(DICOM.glob("study_77654033_CT2_*.dcm"))
    try:
        server.start()
        out = server.wait_for_output("Press Ctrl+C to stop.")
        assert f"DICOM (C-STORE) ARCHIVE at 127.0.0.1:{dicom_port}" in out
        ae = AE(ae_title="CT1")
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", dicom_port, ae_title="ARCHIVE")
        assert assoc.is_established
        for path in names:
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
        server.kill9()  # no clean shutdown: only what was committed before 0x0000 counts
        assoc.abort()
        server.start()
        response = httpx.get(f"{server.base}/ImagingStudy", params={"modality": "CT"},
                             timeout=30)
        (entry,) = response.json()["entry"]
        study = entry["resource"]
        assert study["numberOfInstances"] == len(names)
        endpoint = httpx.get(f"{server.base}/{study['endpoint'][0]['reference']}",
                             timeout=30).json()
        assert endpoint["address"] == f"http://127.0.0.1:{server.port}/dicomweb"
        first = pydicom.dcmread(names[0])
        wado = httpx.get(
            f"{endpoint['address']}/studies/{first.StudyInstanceUID}/series/"
            f"{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}", timeout=30)
        assert wado.status_code == 200
        # one part: the dataset as the SCU encoded it (the transfer syntax it negotiated)
        body = wado.content
        start = body.index(b"\r\n\r\n") + 4
        kept = pydicom.dcmread(io.BytesIO(body[start:body.rindex(b"\r\n--")]))
        assert kept.SOPInstanceUID == first.SOPInstanceUID
        assert kept.PixelData == first.PixelData
    finally:
        server.stop()
