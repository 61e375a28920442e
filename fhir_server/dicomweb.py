"""DICOMweb WADO-RS (DICOM PS3.18 section 10.4) for the instances the DICOM feed kept.

- `GET /dicomweb/studies/{study}/series/{series}/instances/{instance}`: the instance as
  a multipart/related; type="application/dicom" response with one part, the file as
  it was received (no transcoding: the part's Content-Type names its transfer syntax;
  an Accept asking for another transfer syntax is answered 406).
- `GET .../instances/{instance}/rendered`: a PNG of the first frame, scaled to fit
  512x512 (or `?viewport=rows,columns`), for thumbnails. Pixel data this server cannot
  decode (e.g. JPEG 2000 without a decoder plugin installed) is answered 406, never 500.

The instance is found through the ImagingStudy of the caller's tenant (its Study
Instance UID identifier), whose instance names the file's SHA-256 in the blob store.
Errors are OperationOutcomes, like the FHIR API's.
"""

from __future__ import annotations

import asyncio
import io
import uuid
import warnings
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from fhir_server.errors import FHIRError
from fhir_server.rest import http
from fhir_server.rest.handlers import Handlers
from fhir_server.storage.blobs import BlobStore, blob_store_for

PREFIX = "/dicomweb"
THUMBNAIL = 512
INSTANCE = PREFIX + "/studies/{study}/series/{series}/instances/{instance}"


def routes(handlers: Handlers) -> list[BaseRoute]:
    service = WadoRs(handlers)
    return [
        Route(INSTANCE, service.instance, methods=["GET"]),
        Route(INSTANCE + "/rendered", service.rendered, methods=["GET"]),
    ]


def _uid(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    if not value or len(value) > 64 or not all(c.isdigit() or c == "." for c in value):
        raise FHIRError.simple(400, "invalid", f"{name} is not a DICOM UID")
    return value


class WadoRs:
    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self._blobs: BlobStore | None = None

    @property
    def blobs(self) -> BlobStore:
        if self._blobs is None:
            self._blobs = blob_store_for(self.handlers.store)
        return self._blobs

    async def instance(self, request: Request) -> Response:
        try:
            data = await self._file(request)
            accept = request.headers.get("accept", "")
            served = ("multipart/related", "multipart/*", "*/*", "application/dicom")
            if accept.strip() and not any(_media(p) in served for p in accept.split(",")):
                raise FHIRError.simple(406, "not-supported", "instances are served as "
                                       'multipart/related; type="application/dicom" only')
            wanted = _wanted_syntax(accept)
            syntax = _transfer_syntax(data)
            if wanted is not None and wanted not in ("*", syntax):
                raise FHIRError.simple(
                    406, "not-supported",
                    f"the instance is kept in transfer syntax {syntax}; this server does not "
                    f"transcode to {wanted[:64]} (ask for transfer-syntax=* or {syntax})")
        except FHIRError as exc:
            return http.outcome_response(exc)
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={syntax}"
                f"\r\nContent-Length: {len(data)}\r\n\r\n").encode("ascii") + data + \
            f"\r\n--{boundary}--\r\n".encode("ascii")
        media = f'multipart/related; type="application/dicom"; boundary={boundary}'
        return Response(body, 200, media_type=media)

    async def rendered(self, request: Request) -> Response:
        try:
            data = await self._file(request)
            accept = request.headers.get("accept", "")
            if accept and not any(_media(p) in ("image/png", "image/*", "*/*")
                                  for p in accept.split(",")):
                raise FHIRError.simple(406, "not-supported",
                                       "rendered instances are available as image/png only")
            size = _viewport(request.query_params.get("viewport"))
            png = await asyncio.to_thread(render_png, data, size)
        except FHIRError as exc:
            return http.outcome_response(exc)
        return Response(png, 200, media_type="image/png")

    async def _file(self, request: Request) -> bytes:
        from adapters.dicom.study import instance_file
        from adapters.dicom.translate import current_study

        study_uid = _uid(request, "study")
        series_uid = _uid(request, "series")
        instance_uid = _uid(request, "instance")
        study = await current_study(self.handlers.store, self.handlers.ctx, study_uid)
        if study is None:
            raise FHIRError.simple(404, "not-found", "no study with this Study Instance UID")
        series = next((s for s in study.get("series", []) if s.get("uid") == series_uid), None)
        if series is None:
            raise FHIRError.simple(404, "not-found", "the study has no series with this UID")
        instance = next((i for i in series.get("instance", []) if i.get("uid") == instance_uid),
                        None)
        if instance is None:
            raise FHIRError.simple(404, "not-found", "the series has no instance with this UID")
        digest = instance_file(instance)
        data = await asyncio.to_thread(self.blobs.get, digest) if digest else None
        if data is None:
            raise FHIRError.simple(404, "not-found", "the file of this instance is not kept")
        return _part10(data)


def _media(part: str) -> str:
    return part.split(";", 1)[0].strip().lower()


def _wanted_syntax(accept: str) -> str | None:
    """The transfer-syntax parameter of an Accept naming application/dicom (or the
    multipart of it), if any."""
    for part in accept.split(","):
        for param in part.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "transfer-syntax":
                return value.strip().strip('"')
    return None


def _transfer_syntax(data: bytes) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, defer_size=256)
    return str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))


def _part10(data: bytes) -> bytes:
    """A kept file as a Part 10 file: files received without the file meta header (read
    with force) get one made for them, with the transfer syntax they were read in."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    implicit = bool(getattr(ds, "is_implicit_VR", True))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    return out.getvalue()


def _viewport(value: str | None) -> tuple[int, int]:
    if not value:
        return THUMBNAIL, THUMBNAIL
    parts = value.split(",")
    if len(parts) != 2:
        raise FHIRError.simple(400, "invalid", "viewport is rows,columns")
    try:
        rows, columns = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise FHIRError.simple(400, "invalid", "viewport is rows,columns") from None
    if not (0 < rows <= 4096 and 0 < columns <= 4096):
        raise FHIRError.simple(400, "invalid", "viewport rows and columns are 1-4096")
    return rows, columns


def render_png(data: bytes, size: tuple[int, int] = (THUMBNAIL, THUMBNAIL)) -> bytes:
    """The first frame as an 8-bit PNG fitting `size` (rows, columns)."""
    import numpy as np
    from PIL import Image
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        if "PixelData" not in ds:
            raise FHIRError.simple(406, "not-supported",
                                   "this instance has no image (no Pixel Data) to render")
        try:
            pixels: Any = ds.pixel_array
        except Exception as exc:
            syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
            raise FHIRError.simple(
                406, "not-supported",
                f"pixel data in transfer syntax {syntax or 'unknown'} cannot be decoded here "
                f"({type(exc).__name__}); retrieve the instance itself instead") from None
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            pixels = pixels[0]
        try:
            image = _to_8bit(ds, pixels, np, apply_color_lut, apply_modality_lut,
                             apply_voi_lut)
            picture = Image.fromarray(image)
            picture.thumbnail((size[1], size[0]))
            out = io.BytesIO()
            picture.save(out, format="PNG")
        except Exception as exc:  # e.g. PALETTE COLOR without its lookup table
            photometric = str(ds.get("PhotometricInterpretation", "") or "unknown")[:32]
            raise FHIRError.simple(
                406, "not-supported",
                f"this instance ({photometric}) cannot be rendered ({type(exc).__name__}); "
                "retrieve the instance itself instead") from None
    return out.getvalue()


def _to_8bit(ds: Dataset, pixels: Any, np: Any, color_lut: Any, modality_lut: Any,
             voi_lut: Any) -> Any:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        pixels = color_lut(pixels, ds)
        photometric = "RGB"
    # YBR_* pixel data comes out of pydicom (3.x) as RGB already (as_rgb by default)
    if photometric == "RGB" or pixels.ndim == 3:
        array = pixels.astype("float64")
        high = float(array.max()) or 1.0
        scale = 255.0 / high if high > 255 else 1.0
        return np.clip(array * scale, 0, 255).astype("uint8")
    array = modality_lut(pixels, ds)
    array = voi_lut(array, ds) if "WindowCenter" in ds or "VOILUTSequence" in ds else array
    array = array.astype("float64")
    low, high = float(array.min()), float(array.max())
    span = (high - low) or 1.0
    scaled = (array - low) * (255.0 / span)
    if photometric == "MONOCHROME1":
        scaled = 255.0 - scaled
    return np.clip(scaled, 0, 255).astype("uint8")
