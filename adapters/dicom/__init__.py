"""DICOM feed: files, DICOM C-STORE and HTTP pushes -> ImagingStudy, Patient, Endpoint.

`ingest_dicom_bytes` is the one entry for a DICOM instance, whatever brought it: it
keeps the file in the blob store (fsynced), checks it, translates it with the stored
ImagingStudy of its study merged in, and stores it through the pipeline. Instances of
one study are processed one at a time (per store and tenant, in this process), so that
two arriving together both end up in the study. A writer outside this lock (a retry
from the dead-letter queue, another process) cannot make an instance disappear: a
later instance updates the study at the version it merged into, and a conflict keeps
the input as rejected, to be retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from pydicom.dataset import Dataset

from adapters.dicom import quiet
from adapters.dicom.reading import DicomInputError, read_dataset, text
from adapters.dicom.translate import FEED, encode_reference, translate_instance
from adapters.pipeline import IngestResult, Pipeline
from adapters.translation import TranslationError, describe_failure
from fhir_server.storage.base import Context
from fhir_server.storage.blobs import BlobRef, BlobStore, blob_store_for

__all__ = ["FEED", "DicomInputError", "ingest_dicom_bytes", "ingest_checked",
           "prepare_instance"]

log = logging.getLogger(__name__)
quiet.install()  # pydicom's warnings quote element values: keep them out of the log

_study_locks: dict[tuple[int, str, str], tuple[asyncio.Lock, int]] = {}


async def ingest_dicom_bytes(pipeline: Pipeline, ctx: Context, data: bytes, *,
                             source: str = "http",
                             blobs: BlobStore | None = None) -> IngestResult:
    """Keep, translate and store one DICOM instance (a Part 10 file, or a dataset
    without file meta that reads with the required UIDs). `source` says who sent it
    (Provenance agent), e.g. "http", "cli", "DICOM AE CT1". Rejected input is kept
    with its reason; its `error` is the DicomInputError with the C-STORE status."""
    blobs = blobs or blob_store_for(pipeline.store)
    ref, checked = await asyncio.to_thread(prepare_instance, blobs, data)
    return await ingest_checked(pipeline, ctx, ref, checked, source=source)


def prepare_instance(blobs: BlobStore, data: bytes) -> tuple[BlobRef, Dataset | DicomInputError]:
    """The blocking half (runs in a worker thread): write the file durably, read it."""
    ref = blobs.put(data)
    try:
        return ref, read_dataset(data)
    except DicomInputError as exc:
        return ref, exc


async def ingest_checked(pipeline: Pipeline, ctx: Context, ref: BlobRef,
                         checked: Dataset | DicomInputError, *,
                         source: str) -> IngestResult:
    """The store half of `ingest_dicom_bytes`, on the loop that owns the store."""
    raw = encode_reference(ref)
    if isinstance(checked, DicomInputError):
        result = await pipeline.keep_rejected(ctx, FEED, raw, str(checked))
        result.error = checked
        return result
    async with _one_study_at_a_time(pipeline, ctx, text(checked, "StudyInstanceUID")):
        try:
            translation = await translate_instance(pipeline.store, ctx, checked, ref, source)
        except TranslationError as exc:
            error: Exception = exc
            reason = str(exc)
        except Exception as exc:  # a translator bug or a failed read must not lose the input
            log.error("DICOM translation failed: %s", describe_failure(exc))
            error = exc
            reason = f"internal error in the dicom translator ({type(exc).__name__})"
        else:
            return await pipeline.ingest(ctx, FEED, raw, translation=translation)
    result = await pipeline.keep_rejected(ctx, FEED, raw, reason)
    result.error = error
    return result


@contextlib.asynccontextmanager
async def _one_study_at_a_time(pipeline: Pipeline, ctx: Context,
                               study_uid: str) -> AsyncIterator[None]:
    # by store, not pipeline: the listener and the HTTP $ingest may each have their own
    key = (id(pipeline.store), ctx.tenant or "", study_uid)
    lock, users = _study_locks.get(key, (asyncio.Lock(), 0))
    _study_locks[key] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = _study_locks[key]
        if users == 1:
            del _study_locks[key]
        else:
            _study_locks[key] = (lock, users - 1)
