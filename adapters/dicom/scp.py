"""The DICOM listener: a pynetdicom Storage SCP (C-STORE for every storage SOP class,
with the uncompressed and the common compressed transfer syntaxes, kept as received)
and Verification SCP (C-ECHO).

pynetdicom serves each association in a thread of its own. The C-STORE handler keeps
the file in the blob store and reads it there, in that thread, then hands the store
work to the asyncio loop that owns the store (`asyncio.run_coroutine_threadsafe`) and
waits for it: the response is success (0x0000) only once the instance and its
resources are committed. Bad input is kept as rejected and answered with a failure
status (0xA900 dataset does not match, 0xC000 cannot understand); a failure of the
store with 0xA700 (out of resources); a failure status carries the reason in Error
Comment (0000,0902), which never holds element values. A C-STORE whose Affected SOP
Instance UID is not the dataset's SOP Instance UID is refused (0xA900, kept as rejected).
Calling AE titles can be limited to an allow-list; pynetdicom then rejects other
callers' associations (A-ASSOCIATE-RJ, calling AE title not recognised), as it does an
association whose called AE title is not this listener's.

At most 64 associations are served at once (pynetdicom's default is 10), and one
silent for 30 s is aborted (pynetdicom's default is 60 s): ten idle callers used to keep
every other sender out for a minute at a time.

Accepted sockets get TCP_NODELAY: a C-STORE response is a small PDU written after
the request has been read, which Nagle's algorithm would hold back until the peer's
delayed ACK (40 ms or more per instance).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from adapters.dicom import ingest_checked, prepare_instance
from adapters.dicom.reading import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH,
    OUT_OF_RESOURCES,
    DicomInputError,
    text,
)
from adapters.pipeline import Pipeline
from adapters.translation import describe_failure
from fhir_server.storage.base import Context
from fhir_server.storage.blobs import BlobStore, blob_store_for

log = logging.getLogger(__name__)

DEFAULT_AE_TITLE = "FHIRFUSION"
STORE_TIMEOUT = 120.0  # seconds the SCP waits for the store before answering 0xA700
SUCCESS = 0x0000
# pynetdicom's defaults are 10 associations and 60 s: ten idle callers kept every other
# sender out for a minute at a time
DEFAULT_MAX_ASSOCIATIONS = 64
DEFAULT_IDLE_TIMEOUT = 30.0  # seconds an association may stay silent
# warning (PS3.4 B.2.3): stored, but elements were not used (an invalid date): the
# Error Comment says which
ELEMENTS_DISCARDED = 0xB006


def check_ae_title(title: str) -> str:
    """An AE title (PS3.5 AE VR): 1-16 characters, no backslash or control characters,
    not only spaces."""
    cleaned = title.strip()
    if not cleaned or len(title) > 16 or "\\" in title or any(ord(c) < 32 for c in title):
        raise ValueError(f"{title!r} is not a DICOM AE title (1-16 characters, no '\\')")
    return cleaned


@dataclass
class DicomListener:
    """A running Storage SCP; `port` is the bound port (useful after asking for 0)."""

    server: Any
    ae: AE

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.ae.shutdown()


def start_dicom_listener(pipeline: Pipeline, ctx: Context, host: str, port: int, *,
                         ae_title: str = DEFAULT_AE_TITLE,
                         allowed_callers: Iterable[str] = (),
                         blobs: BlobStore | None = None,
                         loop: asyncio.AbstractEventLoop | None = None,
                         max_associations: int = DEFAULT_MAX_ASSOCIATIONS,
                         idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> DicomListener:
    """Start the SCP in its own threads; call from the loop that owns the store (or pass
    it as `loop`). `allowed_callers` empty accepts any calling AE title. At most
    `max_associations` associations at once; one silent for `idle_timeout` seconds is
    aborted, so that idle associations cannot keep other senders out for long."""
    loop = loop or asyncio.get_running_loop()
    blobs = blobs or blob_store_for(pipeline.store)
    quiet = logging.getLogger("pynetdicom")
    if quiet.level == logging.NOTSET:
        # pynetdicom logs several INFO lines per association and per C-STORE
        quiet.setLevel(logging.WARNING)
    ae = AE(ae_title=check_ae_title(ae_title))
    ae.maximum_pdu_size = 0  # no limit: fewer, larger P-DATA PDUs for big instances
    ae.maximum_associations = max_associations
    ae.network_timeout = idle_timeout  # ARTIM: a silent association is aborted
    ae.acse_timeout = min(idle_timeout, 30.0)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    allowed = [check_ae_title(a) for a in allowed_callers]
    if allowed:
        ae.require_calling_aet = allowed
    # an association addressed to another AE title was meant for another node
    ae.require_called_aet = True

    def on_store(event: Any) -> int | Dataset:
        status, reason = _store(event, pipeline, ctx, blobs, loop)
        if status == SUCCESS or not reason:
            return status
        answer = Dataset()
        answer.Status = status
        # Error Comment (0000,0902), LO: at most 64 characters; reasons never hold values
        answer.ErrorComment = reason.replace("\\", "/")[:64]
        return answer

    handlers = [
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_C_ECHO, lambda event: SUCCESS),
        (evt.EVT_CONN_OPEN, _no_delay),
    ]
    server = ae.start_server((host, port), block=False, evt_handlers=handlers)
    return DicomListener(server, ae)


def _no_delay(event: Any) -> None:
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (or already closed): nothing to tune


def _store(event: Any, pipeline: Pipeline, ctx: Context, blobs: BlobStore,
           loop: asyncio.AbstractEventLoop) -> tuple[int, str]:
    """The C-STORE status, and the reason of a failure for its Error Comment."""
    calling = str(event.assoc.requestor.ae_title).strip() or "unknown"
    try:
        data = event.encoded_dataset(include_meta=True)
    except Exception as exc:
        log.warning("C-STORE from %s without a readable dataset: %s", calling,
                    describe_failure(exc))
        return CANNOT_UNDERSTAND, "the dataset could not be read"
    try:
        ref, checked = prepare_instance(blobs, data)
    except OSError as exc:  # the file could not be kept: nothing is acknowledged
        log.error("C-STORE from %s: blob store failed: %s", calling, describe_failure(exc))
        return OUT_OF_RESOURCES, "the file could not be kept"
    affected = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "").strip()
    if isinstance(checked, Dataset) and affected != text(checked, "SOPInstanceUID"):
        # the SCU would believe a UID stored that is not: refuse (and keep) the instance
        checked = DicomInputError("Affected SOP Instance UID differs from the dataset's "
                                  "SOP Instance UID (0008,0018)", DOES_NOT_MATCH)
    work = ingest_checked(pipeline, ctx, ref, checked, source=f"DICOM AE {calling}")
    future = asyncio.run_coroutine_threadsafe(work, loop)
    try:
        result = future.result(STORE_TIMEOUT)
    except FutureTimeout:
        future.cancel()
        log.error("C-STORE from %s: the store did not answer in %ss", calling, STORE_TIMEOUT)
        return OUT_OF_RESOURCES, f"the store did not answer in {STORE_TIMEOUT:g} s"
    except Exception as exc:
        log.error("C-STORE from %s failed: %s", calling, describe_failure(exc))
        return OUT_OF_RESOURCES, "the store failed"
    if result.ok:
        details = (result.result or {}).get("details") or {}
        notes = details.get("warnings") if isinstance(details, dict) else None
        if notes:
            return ELEMENTS_DISCARDED, "; ".join(str(n) for n in notes)
        return SUCCESS, ""
    reason = result.reason or ""
    if isinstance(result.error, DicomInputError):
        return result.error.status, reason
    # translated but refused by the store: a storage failure, or the study changed by
    # another writer meanwhile (412/409), is worth sending again; a validation error is not
    transient = "internal error" in reason or reason.startswith(("FHIR 412", "FHIR 409"))
    return (OUT_OF_RESOURCES if transient else CANNOT_UNDERSTAND), reason
