"""`fhir-fusion ingest dicom PATH...`: a folder walked recursively, a DICOMDIR, files;
and the serve options of the DICOM listener."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

import pydicom
import pytest
from pydicom.fileset import FileSet

from fhir_server.cli import build_parser, main
from fhir_server.config import ConfigError, resolve_serve_config
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

DICOM = Path(__file__).resolve().parents[2] / "shared" / "samples" / "dicom"
CTX = Context()


async def _inputs(data_dir: Path, status: Literal["stored", "rejected"]) -> list[str]:
    store = await SQLiteStore.open(data_dir / "fhir-fusion.sqlite3")
    try:
        found = await store.list_inputs(CTX, feed="dicom", status=status, limit=100)
        return [r.reason or "" for r in found]
    finally:
        await store.close()


def test_ingest_a_folder_recursively(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["ingest", "dicom", str(DICOM), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    dcm = list(DICOM.glob("*.dcm"))
    others = [p for p in DICOM.iterdir() if p.is_file() and p.suffix != ".dcm"]
    # two samples are rejected (test_dicom_translate.REJECTED), and every other file
    # in the folder (pydicom_charset_FileInfo.txt) is not DICOM
    assert f"{len(dcm) + len(others)} DICOM files: {len(dcm) - 2} stored, 0 duplicate, " \
           f"{2 + len(others)} rejected" in out
    rejected = asyncio.run(_inputs(data, "rejected"))
    assert sum("not a DICOM file" in r for r in rejected) == 1 + len(others)
    # again: everything is known already
    assert main(["ingest", "dicom", str(DICOM), "--data-dir", str(data)]) == 0
    assert f"0 stored, {len(dcm) - 2} duplicate" in capsys.readouterr().out


def test_ingest_a_dicomdir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    media = tmp_path / "media"
    fileset = FileSet()
    names = sorted(DICOM.glob("study_77654033_CT2_*.dcm"))
    for path in names:
        fileset.add(pydicom.dcmread(path))
    fileset.write(media)
    data = tmp_path / "data"
    assert main(["ingest", "dicom", str(media / "DICOMDIR"), "--data-dir", str(data)]) == 0
    assert f"{len(names)} DICOM files: {len(names)} stored" in capsys.readouterr().out
    # the folder holding the DICOMDIR: the DICOMDIR itself is skipped, its files found
    assert main(["ingest", "dicom", str(media), "--data-dir", str(data)]) == 0
    assert f"{len(names)} DICOM files: 0 stored, {len(names)} duplicate, 0 rejected" in \
        capsys.readouterr().out


def test_unreadable_path_is_exit_status_1(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ingest", "dicom", str(tmp_path / "missing.dcm"), "--data-dir",
                 str(tmp_path / "data")])
    assert code == 1
    assert "cannot read" in capsys.readouterr().out


def test_serve_options_of_the_dicom_listener() -> None:
    def config(argv: list[str], env: dict[str, str] | None = None) -> Any:
        args = build_parser().parse_args(["serve", *argv])
        return resolve_serve_config(vars(args), env or {})

    default = config([])
    assert (default.dicom_port, default.dicom_ae, default.dicom_allowed_aes) == (
        11112, "FHIRFUSION", ())
    chosen = config(["--dicom-port", "0", "--dicom-ae", "PACS1",
                     "--dicom-allowed-aes", "CT1, MR2"])
    assert (chosen.dicom_port, chosen.dicom_ae, chosen.dicom_allowed_aes) == (
        0, "PACS1", ("CT1", "MR2"))
    from_env = config([], {"FHIR_FUSION_DICOM_AE": "ARCHIVE"})
    assert from_env.dicom_ae == "ARCHIVE"
    with pytest.raises(ConfigError, match="FHIR_FUSION_DICOM_AE"):
        config([], {"FHIR_FUSION_DICOM_AE": "MUCH_TOO_LONG_AE_TITLE"})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--dicom-ae", "BAD\\AE"])
