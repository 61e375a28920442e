"""`fhir-fusion ingest dicom PATH...`: DICOM files, folders (recursively) and DICOMDIRs.

A folder is walked in name order; a DICOMDIR met in a walk is skipped (the files it
lists are in the same tree and are found by the walk). A DICOMDIR given by name is
opened and the files its directory records reference are ingested. Every file goes
through `ingest_dicom_bytes`, so a file that is not DICOM is kept as rejected with its
reason like any other bad input.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from adapters.dicom import ingest_dicom_bytes
from adapters.dicom.reading import MEDIA_DIRECTORY, has_part10_header
from adapters.pipeline import Pipeline
from fhir_server.storage.base import Context


@dataclass
class DicomIngestSummary:
    stored: int = 0
    duplicate: int = 0
    rejected: int = 0
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def files(self) -> int:
        return self.stored + self.duplicate + self.rejected

    def __str__(self) -> str:
        text = (f"{self.files} DICOM files: {self.stored} stored, {self.duplicate} duplicate, "
                f"{self.rejected} rejected (see `fhir-fusion deadletter list`)")
        for path, reason in self.unreadable:
            text += f"\ncannot read {path}: {reason}"
        return text


def is_dicomdir(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            if not has_part10_header(f.read(132)):
                return False
        meta = pydicom.filereader.read_file_meta_info(path)
    except (OSError, pydicom.errors.InvalidDicomError, ValueError, EOFError):
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY


def dicomdir_files(path: Path) -> list[Path]:
    """The files a DICOMDIR's directory records reference (Referenced File ID
    (0004,1500), path components relative to the DICOMDIR's folder)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(path.read_bytes()))
    found = []
    for record in ds.get("DirectoryRecordSequence") or []:
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else [str(p) for p in file_id]
        found.append(path.parent.joinpath(*parts))
    return found


def dicom_paths(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.name.startswith(".") or is_dicomdir(child):
                    continue
                yield child
        elif is_dicomdir(path):
            yield from dicomdir_files(path)
        else:
            yield path


async def ingest_dicom_paths(pipeline: Pipeline, ctx: Context, paths: Iterable[Path],
                             *, source: str = "cli") -> DicomIngestSummary:
    summary = DicomIngestSummary()
    for path in dicom_paths(paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            summary.unreadable.append((path, exc.strerror or type(exc).__name__))
            continue
        result = await ingest_dicom_bytes(pipeline, ctx, data, source=source)
        if result.status == "stored":
            summary.stored += 1
        elif result.status == "duplicate":
            summary.duplicate += 1
        else:
            summary.rejected += 1
    return summary
