"""`fhir-fusion terminology load KIND PATH`: a loader run into the concept store of the
data folder, with a summary; a bad file is exit status 1 naming the file and line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fhir_server.cli import main
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore
from terminology.store import concept_store
from test_terminology_load import ICD10_CLAML, _write_loinc_release


def _concept(data_dir: Path, url: str, code: str) -> tuple[str | None, list[str]]:
    async def read() -> tuple[str | None, list[str]]:
        store = await SQLiteStore.open(data_dir / "fhir-fusion.sqlite3")
        try:
            concepts = concept_store(store)
            system = await concepts.system(Context(), url)
            assert system is not None
            found = await concepts.concept(Context(), system, code)
            assert found is not None
            return found.concept.display, sorted(d.language or "" for d in
                                                 found.concept.designations)
        finally:
            await store.close()

    return asyncio.run(read())


def test_load_loinc_prints_a_summary_and_fills_the_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release = tmp_path / "Loinc_2.77"
    _write_loinc_release(release)
    data = tmp_path / "data"
    status = main(["terminology", "load", "loinc", str(release), "--version", "2.77",
                   "--language", "zh-CN", "--data-dir", str(data)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.startswith("loaded LOINC (http://loinc.org version 2.77): 3 concepts, "
                          "10 designations, languages en, zh-CN, in ")
    assert "licence notice: This material contains content from LOINC" in out
    display, languages = _concept(data, "http://loinc.org", "2345-7")
    assert display == "Glucose [Mass/volume] in Serum or Plasma"
    assert "zh-CN" in languages


def test_load_icd10_claml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "icd10.xml"
    path.write_text(ICD10_CLAML, encoding="utf-8")
    data = tmp_path / "data"
    assert main(["terminology", "load", "icd10-claml", str(path), "--data-dir", str(data)]) == 0
    assert "4 concepts" in capsys.readouterr().out
    assert _concept(data, "http://hl7.org/fhir/sid/icd-10", "E11")[0] == "Type 2 diabetes mellitus"


def test_load_codelist_with_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lab.csv"
    path.write_text("Code,Name,中文名\nGLU,Glucose,葡萄糖\n", encoding="utf-8")
    data = tmp_path / "data"
    url = "http://hospital-a.example/fhir/CodeSystem/lab"
    assert main(["terminology", "load", "codelist", str(path), "--url", url,
                 "--code-column", "Code", "--display-column", "Name",
                 "--language-column", "zh-CN=中文名", "--data-dir", str(data)]) == 0
    assert "1 concepts, 2 designations, languages en, zh-CN" in capsys.readouterr().out
    assert _concept(data, url, "GLU") == ("Glucose", ["en", "zh-CN"])


def test_bad_file_is_exit_1_naming_file_and_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Loinc.csv"
    path.write_text("LOINC_NUM;COMPONENT;PROPERTY\n2345-7;Glucose;MCnc\n", encoding="utf-8")
    status = main(["terminology", "load", "loinc", str(path), "--data-dir",
                   str(tmp_path / "data")])
    assert status == 1
    err = capsys.readouterr().err
    assert f"fhir-fusion: cannot load loinc: {path}, line 1: missing column" in err
    assert "semicolon-separated" in err


def test_codelist_without_url_is_refused(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lab.csv"
    path.write_text("code,display\nGLU,Glucose\n", encoding="utf-8")
    assert main(["terminology", "load", "codelist", str(path), "--data-dir",
                 str(tmp_path / "data")]) == 1
    assert "needs the URL of its code system (--url)" in capsys.readouterr().err


def test_load_snomed_reports_staging_and_the_version(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from test_terminology_load import _write_rf2

    release = _write_rf2(tmp_path / "release")
    data = tmp_path / "data"
    assert main(["terminology", "load", "snomed", str(release), "--data-dir", str(data)]) == 0
    captured = capsys.readouterr()
    assert "terminology load: staged sct2_Concept_Snapshot_INT_20230131.txt: 4 rows" in (
        captured.err)
    assert captured.out.startswith(
        "loaded SNOMED_CT (http://snomed.info/sct version "
        "http://snomed.info/sct/900000000000207008/version/20230131): 4 concepts, "
        "6 designations, languages en, in ")  # 7 descriptions, one inactive
    assert _concept(data, "http://snomed.info/sct", "73211009")[0] == "Diabetes mellitus"


@pytest.mark.parametrize(("rows", "says"), [
    ("GLU,Glucose,葡萄糖,\nLOOP1,Loop,环,LOOP2\nLOOP2,Loop2,环2,LOOP1\n",
     "line 3: parents go round in a cycle: 'LOOP1' -> 'LOOP2' -> 'LOOP1'"),
    ("SELF,Self,自,SELF\n", "line 2: parents go round in a cycle: 'SELF' -> 'SELF'"),
    ("A,a,甲,MISSING\n", "line 2: parent 'MISSING' of 'A' is not a code of the list (Group)"),
])
def test_a_parent_cycle_or_a_missing_parent_is_refused_naming_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: str, says: str) -> None:
    path = tmp_path / "codes3.csv"
    path.write_text("Code,Name,中文名,Group\n" + rows, encoding="utf-8")
    data = tmp_path / "data"
    assert main(["terminology", "load", "codelist", str(path), "--url", "http://h.example/cs",
                 "--code-column", "Code", "--display-column", "Name",
                 "--language-column", "zh-CN=中文名", "--parent-column", "Group",
                 "--data-dir", str(data)]) == 1
    assert f"{path}, {says}" in capsys.readouterr().err


@pytest.mark.parametrize(("rows", "says"), [
    ('GLU,Glucose\n"A  B",two spaces\n', "line 3: Code 'A  B' is not a FHIR code"),
    ('GLU,Glucose\n"X\tY",tab\n', "line 3: Code 'X\\tY' is not a FHIR code"),
    ('GLU,Glucose\n"L1\nL2",newline\nNA,Sodium\n', "line 3: Code 'L1\\nL2' is not a FHIR code"),
    ('GLU,Glucose\n" A1",leading\n', "line 3: Code ' A1' is not a FHIR code"),
    ('GLU,Glucose\n"A1 ",trailing\n', "line 3: Code 'A1 ' is not a FHIR code"),
    ('GLU,Glucose\n"A,a\nNA,Sodium\n', "line 3: not a readable CSV row (unexpected end of data)"),
])
def test_codelist_row_that_is_not_a_fhir_code_refuses_the_file_naming_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: str, says: str) -> None:
    # R4 datatypes.html#code: no leading/trailing whitespace, only single spaces inside
    path = tmp_path / "ws.csv"
    path.write_text("Code,Name\n" + rows, encoding="utf-8")
    data = tmp_path / "data"
    url = "http://h.example/cs/ws"
    assert main(["terminology", "load", "codelist", str(path), "--url", url,
                 "--code-column", "Code", "--display-column", "Name",
                 "--data-dir", str(data)]) == 1
    assert f"fhir-fusion: cannot load codelist: {path}, {says}" in capsys.readouterr().err

    async def loaded() -> bool:
        store = await SQLiteStore.open(data / "fhir-fusion.sqlite3")
        try:
            return await concept_store(store).system(Context(), url) is not None
        finally:
            await store.close()

    assert not asyncio.run(loaded())  # the whole file is refused, GLU included


def test_codelist_code_with_single_inner_spaces_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.csv"
    path.write_text('Code,Name\n"A B C",spaced\n', encoding="utf-8")
    data = tmp_path / "data"
    assert main(["terminology", "load", "codelist", str(path), "--url", "http://h.example/cs/ok",
                 "--code-column", "Code", "--display-column", "Name",
                 "--data-dir", str(data)]) == 0
    assert _concept(data, "http://h.example/cs/ok", "A B C")[0] == "spaced"
