"""WADO-RS over the ASGI app (httpx): instances come back byte for byte in a
multipart/related response (PS3.18 8.6.1.2, 10.4); `rendered` gives a PNG that decodes;
what cannot be served is a clear 4xx OperationOutcome."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless, generate_uid

from adapters.dicom import ingest_dicom_bytes
from adapters.pipeline import Pipeline
from fhir_server.app import create_app
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

DICOM = Path(__file__).resolve().parents[2] / "shared" / "samples" / "dicom"
CTX = Context()


def url(ds: Any) -> str:
    return (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


def scenario(tmp_path: Path, files: list[bytes],
             body: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    async def go() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        try:
            pipeline = Pipeline(store)
            for data in files:
                result = await ingest_dicom_bytes(pipeline, CTX, data)
                assert result.status == "stored", result.reason
            transport = httpx.ASGITransport(app=create_app(store))
            async with httpx.AsyncClient(transport=transport, base_url="http://pacs.test") as c:
                await body(c)
        finally:
            await store.close()

    asyncio.run(go())


def parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + response.content)
    assert message.is_multipart()
    return [(p.get_content_type() + "".join(f"; {k}={v}" for k, v in p.get_params()[1:]),
             p.get_payload(decode=True)) for p in message.iter_parts()]


@pytest.mark.parametrize("name", ["pydicom_CT_small.dcm", "pydicom_JPEG2000.dcm",
                                  "pydicom_MR_small_bigendian.dcm"])
def test_instance_round_trip_is_byte_for_byte(tmp_path: Path, name: str) -> None:
    data = (DICOM / name).read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))

    async def body(client: httpx.AsyncClient) -> None:
        response = await client.get(
            url(ds), headers={"Accept": 'multipart/related; type="application/dicom"; '
                                        "transfer-syntax=*"})
        assert response.status_code == 200, response.text
        media = response.headers["content-type"]
        assert media.startswith("multipart/related")
        assert 'type="application/dicom"' in media
        (part,) = parts(response)
        assert part[0] == ("application/dicom; transfer-syntax="
                           f"{ds.file_meta.TransferSyntaxUID}")
        assert part[1] == data

    scenario(tmp_path, [data], body)


def test_instance_kept_without_file_meta_comes_back_as_a_part10_file(tmp_path: Path) -> None:
    data = (DICOM / "pydicom_rtstruct.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data), force=True)

    async def body(client: httpx.AsyncClient) -> None:
        response = await client.get(url(ds))
        assert response.status_code == 200
        (part,) = parts(response)
        assert part[1][128:132] == b"DICM"
        back = pydicom.dcmread(io.BytesIO(part[1]))
        assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"  # implicit VR LE
        assert back.ROIContourSequence == ds.ROIContourSequence

    scenario(tmp_path, [data], body)


def test_rendered_png_decodes(tmp_path: Path) -> None:
    data = (DICOM / "pydicom_CT_small.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))

    async def body(client: httpx.AsyncClient) -> None:
        response = await client.get(url(ds) + "/rendered", headers={"Accept": "image/png"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "PNG"
        assert image.size == (ds.Columns, ds.Rows)  # 128x128 fits the 512 thumbnail
        assert image.mode == "L"
        small = await client.get(url(ds) + "/rendered?viewport=64,64")
        assert Image.open(io.BytesIO(small.content)).size == (64, 64)
        rgb = await client.get(url(ds) + "/rendered", headers={"Accept": "image/jpeg"})
        assert rgb.status_code == 406

    scenario(tmp_path, [data], body)


def test_rendered_colour_ultrasound(tmp_path: Path) -> None:
    data = (DICOM / "pydicom_ExplVR_BigEnd.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.PhotometricInterpretation == "RGB"

    async def body(client: httpx.AsyncClient) -> None:
        response = await client.get(url(ds) + "/rendered")
        assert response.status_code == 200
        image = Image.open(io.BytesIO(response.content))
        assert image.mode == "RGB" and image.size == (ds.Columns, ds.Rows)

    scenario(tmp_path, [data], body)


def test_what_cannot_be_rendered_is_a_406_outcome(tmp_path: Path) -> None:
    report = (DICOM / "pydicom_test-SR.dcm").read_bytes()
    sr = pydicom.dcmread(io.BytesIO(report))
    # JPEG-LS needs a decoder plugin (pylibjpeg-libjpeg or gdcm) this server does not ship
    ds = pydicom.dcmread(DICOM / "pydicom_CT_small.dcm")
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)

    async def body(client: httpx.AsyncClient) -> None:
        response = await client.get(url(ds) + "/rendered")
        assert response.status_code == 406
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert JPEGLSLossless in outcome["issue"][0]["diagnostics"]
        no_image = await client.get(url(sr) + "/rendered")
        assert no_image.status_code == 406
        assert "no Pixel Data" in no_image.json()["issue"][0]["diagnostics"]
        # retrieval itself works: the file is kept as received
        assert (await client.get(url(ds))).status_code == 200

    scenario(tmp_path, [report, out.getvalue()], body)


def test_unknown_uids_and_other_transfer_syntaxes(tmp_path: Path) -> None:
    data = (DICOM / "pydicom_CT_small.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))

    async def body(client: httpx.AsyncClient) -> None:
        base = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        for path in (f"/dicomweb/studies/1.2.3/series/{ds.SeriesInstanceUID}/instances/1.2",
                     f"{base[:-1]}9/instances/{ds.SOPInstanceUID}",
                     f"{base}/instances/1.2.3.4"):
            response = await client.get(path)
            assert response.status_code == 404
            assert response.json()["resourceType"] == "OperationOutcome"
        bad = await client.get(f"/dicomweb/studies/x'1/series/1/instances/2")
        assert bad.status_code == 400
        other = await client.get(url(ds), headers={
            "Accept": 'multipart/related; type="application/dicom"; '
                      "transfer-syntax=1.2.840.10008.1.2.4.50"})
        assert other.status_code == 406
        same = await client.get(url(ds), headers={
            "Accept": 'multipart/related; type="application/dicom"; '
                      "transfer-syntax=1.2.840.10008.1.2.1"})
        assert same.status_code == 200

    scenario(tmp_path, [data], body)


def test_palette_color_without_its_lookup_table_is_a_406_not_a_500(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DICOM / "pydicom_CT_small.dcm")
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PhotometricInterpretation = "PALETTE COLOR"  # and no Palette Color Lookup Table
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)

    async def body(client: httpx.AsyncClient) -> None:
        response = await client.get(url(ds) + "/rendered")
        assert response.status_code == 406
        diagnostics = response.json()["issue"][0]["diagnostics"]
        assert "(PALETTE COLOR) cannot be rendered (ValueError)" in diagnostics
        assert (await client.get(url(ds))).status_code == 200

    scenario(tmp_path, [out.getvalue()], body)


def test_accept_other_than_dicom_is_406_and_a_viewport_has_two_values(tmp_path: Path) -> None:
    data = (DICOM / "pydicom_CT_small.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))

    async def body(client: httpx.AsyncClient) -> None:
        for accept in ("application/json", ';;;"""'):
            response = await client.get(url(ds), headers={"Accept": accept})
            assert response.status_code == 406, accept
            assert response.json()["resourceType"] == "OperationOutcome"
        ok = await client.get(url(ds), headers={
            "Accept": 'multipart/related; type="application/dicom"'})
        assert ok.status_code == 200
        three = await client.get(url(ds) + "/rendered?viewport=1,2,3")
        assert three.status_code == 400 and "rows,columns" in three.text

    scenario(tmp_path, [data], body)
