"""Reading one DICOM file (or C-STORE dataset) and deciding whether it can be taken.

A Part 10 file (128-byte preamble, "DICM", file meta group) is read as it is. Data
without the file meta header is read once more with pydicom's `force`, and taken only
when what comes out has the three UIDs an ImagingStudy needs: random bytes read with
`force` give a dataset of garbage elements, never those UIDs. pydicom reads truncated
data without complaint, so the length of uncompressed pixel data is checked against
what Rows x Columns x samples x bits x frames requires.
"""

from __future__ import annotations

import io
import re
import warnings
from typing import Any

import pydicom
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from adapters.translation import TranslationError

UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
REQUIRED_UIDS = (
    ("StudyInstanceUID", "(0020,000D)"),
    ("SeriesInstanceUID", "(0020,000E)"),
    ("SOPInstanceUID", "(0008,0018)"),
)
# Encapsulated (compressed) transfer syntaxes have no fixed pixel data length.
NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
}
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"


class DicomInputError(TranslationError):
    """Input that is not a DICOM instance this server can take; `status` is the C-STORE
    failure status to answer with (PS3.4 Annex B.2.3)."""

    def __init__(self, message: str, status: int = 0xC000) -> None:
        super().__init__(message)
        self.status = status


# C-STORE failure statuses (PS3.4 B.2.3): "cannot understand" (0xC000-0xCFFF), "data set
# does not match SOP class" (0xA900-0xA9FF), "out of resources" (0xA700-0xA7FF).
CANNOT_UNDERSTAND = 0xC000
DOES_NOT_MATCH = 0xA900
OUT_OF_RESOURCES = 0xA700


def has_part10_header(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def read_dataset(data: bytes) -> Dataset:
    """The dataset in `data`, checked; raises DicomInputError naming what is wrong."""
    if not data:
        raise DicomInputError("empty input: no DICOM data", CANNOT_UNDERSTAND)
    part10 = has_part10_header(data)
    with warnings.catch_warnings():
        # pydicom warns about oddities it reads past (VR guesses, bad values); the
        # checks below decide, and its warnings would quote values into the log
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=not part10)
        except InvalidDicomError:
            raise DicomInputError("not a DICOM file: no 'DICM' file meta header",
                                  CANNOT_UNDERSTAND) from None
        except Exception as exc:  # pydicom raises many kinds on broken data
            raise DicomInputError(
                f"DICOM data cannot be read ({type(exc).__name__}): truncated or corrupt",
                CANNOT_UNDERSTAND) from None
        media = str(ds.file_meta.get("MediaStorageSOPClassUID", "")) if part10 else ""
        if media == MEDIA_DIRECTORY:
            raise DicomInputError("a DICOMDIR (media directory) is not an instance; "
                                  "ingest the files it lists", DOES_NOT_MATCH)
        check_character_set(ds)
        _check_uids(ds, part10)
        _check_pixel_length(ds)
        _decode_used(ds)
    return ds


def check_character_set(ds: Dataset) -> None:
    """Every Specific Character Set (0008,0005) term must be one pydicom can decode; an
    unknown one would otherwise be read as ASCII with a warning, mangling names."""
    value = ds.get("SpecificCharacterSet")
    if value is None:
        return
    terms = [value] if isinstance(value, str) else list(value)
    for term in terms:
        cleaned = str(term).strip()
        if cleaned and cleaned not in python_encoding:
            raise DicomInputError(
                f"unknown character set in Specific Character Set (0008,0005): "
                f"{cleaned[:32]!r}", CANNOT_UNDERSTAND)


def _check_uids(ds: Dataset, part10: bool) -> None:
    for keyword, tag in REQUIRED_UIDS:
        value = str(ds.get(keyword, "") or "").strip()
        if not value:
            if not part10:
                raise DicomInputError(
                    "not a DICOM file: no 'DICM' file meta header, and no dataset with "
                    f"{keyword} {tag} could be read without it", CANNOT_UNDERSTAND)
            raise DicomInputError(f"missing {keyword} {tag}", DOES_NOT_MATCH)
        if len(value) > 64 or not UID_PATTERN.fullmatch(value):
            raise DicomInputError(f"{keyword} {tag} is not a valid UID", DOES_NOT_MATCH)
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    if not sop_class:
        raise DicomInputError("missing SOPClassUID (0008,0016)", DOES_NOT_MATCH)


def _check_pixel_length(ds: Dataset) -> None:
    if "PixelData" not in ds:
        return
    syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "") \
        if hasattr(ds, "file_meta") else ""
    if syntax and syntax not in NATIVE_SYNTAXES:
        return  # encapsulated: fragments, no fixed length
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise DicomInputError("pixel data without valid Rows, Columns or Bits Allocated",
                              DOES_NOT_MATCH) from None
    expected = (rows * columns * samples * frames * bits + 7) // 8
    actual = len(ds.PixelData)
    if actual < expected:
        raise DicomInputError(
            f"truncated: Pixel Data (7FE0,0010) has {actual} bytes, the image needs "
            f"{expected}", CANNOT_UNDERSTAND)


# The elements the translation reads (adapters/dicom/study.py). pydicom converts values
# lazily; converting all of a CT header's ~250 elements costs more than the rest of the
# check, and the others are kept in the file as they are.
USED = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
    "SeriesInstanceUID", "StudyID", "AccessionNumber", "Modality", "StudyDate", "StudyTime",
    "SeriesDate", "SeriesTime", "TimezoneOffsetFromUTC", "StudyDescription",
    "SeriesDescription", "SeriesNumber", "InstanceNumber", "NumberOfFrames",
    "BodyPartExamined", "Laterality", "ImageLaterality", "ReferringPhysicianName",
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientSex", "PatientBirthDate",
    "InstitutionName", "ContentLabel", "DocumentTitle", "ProcedureCodeSequence",
    "IssuerOfPatientIDQualifiersSequence", "Rows", "Columns", "BitsAllocated",
    "SamplesPerPixel",
)


def _decode_used(ds: Dataset) -> None:
    """Convert the elements the translation reads now, so that a broken one is found
    here and named, rather than in the middle of the translation."""
    for keyword in USED:
        try:
            value = ds.get(keyword)
            if isinstance(value, Sequence):
                for item in value:
                    for elem in item.iterall():
                        _ = elem.value
        except Exception as exc:
            raise DicomInputError(f"{keyword} cannot be decoded ({type(exc).__name__})",
                                  CANNOT_UNDERSTAND) from None


def text(ds: Dataset, keyword: str) -> str:
    """An element's value as stripped text ('' when absent or empty)."""
    value: Any = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()
