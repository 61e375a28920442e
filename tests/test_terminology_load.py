"""Loaders for licensed release files: LOINC CSV, SNOMED CT RF2, ICD-10/ICD-11 ClaML and
local code lists. Fixtures are small files in each official layout, with real codes and
names (LOINC 2345-7, SNOMED CT 73211009, ICD-10 E11)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from terminology.loaders import LoadError
from terminology.loaders.base import FSN, SYNONYM
from terminology.loaders.claml import ICD10_URL, load_icd10, load_icd11
from terminology.loaders.codelist import Columns, load_codelist
from terminology.loaders.loinc import check_digit_ok, load_loinc
from terminology.loaders.snomed import load_snomed

# --- LOINC -----------------------------------------------------------------------------

LOINC_COLUMNS = [
    "LOINC_NUM", "COMPONENT", "PROPERTY", "TIME_ASPCT", "SYSTEM", "SCALE_TYP", "METHOD_TYP",
    "CLASS", "VersionLastChanged", "CHNG_TYPE", "DefinitionDescription", "STATUS",
    "CONSUMER_NAME", "CLASSTYPE", "FORMULA", "EXMPL_ANSWERS", "SURVEY_QUEST_TEXT",
    "SURVEY_QUEST_SRC", "UNITSREQUIRED", "RELATEDNAMES2", "SHORTNAME", "ORDER_OBS",
    "HL7_FIELD_SUBFIELD_ID", "EXTERNAL_COPYRIGHT_NOTICE", "EXAMPLE_UNITS", "LONG_COMMON_NAME",
    "EXAMPLE_UCUM_UNITS", "STATUS_REASON", "STATUS_TEXT", "CHANGE_REASON_PUBLIC",
    "COMMON_TEST_RANK", "COMMON_ORDER_RANK", "HL7_ATTACHMENT_STRUCTURE",
    "EXTERNAL_COPYRIGHT_LINK", "PanelType", "AskAtOrderEntry", "AssociatedObservations",
    "VersionFirstReleased", "ValidHL7AttachmentRequest", "DisplayName",
]


def _loinc_row(code: str, component: str, prop: str, system: str, short: str, long: str,
               ucum: str, status: str = "ACTIVE", method: str = "") -> list[str]:
    row = dict.fromkeys(LOINC_COLUMNS, "")
    row.update(LOINC_NUM=code, COMPONENT=component, PROPERTY=prop, TIME_ASPCT="Pt",
               SYSTEM=system, SCALE_TYP="Qn", METHOD_TYP=method, CLASS="CHEM", STATUS=status,
               CLASSTYPE="1", SHORTNAME=short, LONG_COMMON_NAME=long,
               EXAMPLE_UCUM_UNITS=ucum, ORDER_OBS="Both", VersionFirstReleased="1.0")
    return [row[c] for c in LOINC_COLUMNS]


def _write_loinc_release(root: Path) -> Path:
    table = root / "LoincTable"
    table.mkdir(parents=True)
    with (table / "Loinc.csv").open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, quoting=csv.QUOTE_ALL)  # the release quotes every field
        out.writerow(LOINC_COLUMNS)
        out.writerow(_loinc_row("2345-7", "Glucose", "MCnc", "Ser/Plas", "Glucose SerPl-mCnc",
                                "Glucose [Mass/volume] in Serum or Plasma", "mg/dL"))
        out.writerow(_loinc_row("2823-3", "Potassium", "SCnc", "Ser/Plas",
                                "Potassium SerPl-sCnc",
                                "Potassium [Moles/volume] in Serum or Plasma", "mmol/L"))
        # the status is set here to exercise the flag, not taken from a release
        out.writerow(_loinc_row("14682-9", "Creatinine", "SCnc", "Ser/Plas",
                                "Creat SerPl-sCnc",
                                "Creatinine [Moles/volume] in Serum or Plasma", "umol/L",
                                status="DEPRECATED"))
    variants = root / "AccessoryFiles" / "LinguisticVariants"
    variants.mkdir(parents=True)
    (variants / "LinguisticVariants.csv").write_text(
        '"ID","ISO_LANGUAGE","ISO_COUNTRY","LANGUAGE_NAME","PRODUCER"\n'
        '"5","zh","CN","Chinese (CHINA)","Lin Zhang, A LOINC volunteer from China"\n',
        encoding="utf-8")
    (variants / "zhCN5LinguisticVariant.csv").write_text(
        '"LOINC_NUM","COMPONENT","PROPERTY","TIME_ASPCT","SYSTEM","SCALE_TYP","METHOD_TYP",'
        '"CLASS","SHORTNAME","LONG_COMMON_NAME","RELATEDNAMES2","LinguisticVariantDisplayName"\n'
        '"2345-7","葡萄糖","质量浓度","时间点","血清/血浆","定量型","","化学","","","",'
        '"葡萄糖 [质量/体积] 于 血清或血浆"\n', encoding="utf-8")
    return table / "Loinc.csv"


def test_loinc_release_folder_gives_header_concepts_and_properties(tmp_path: Path) -> None:
    _write_loinc_release(tmp_path)
    loaded = load_loinc(tmp_path, version="2.77", languages=("zh-CN",))
    assert loaded.header.url == "http://loinc.org"
    assert loaded.header.version == "2.77"
    assert "Regenstrief Institute" in (loaded.header.copyright or "")
    concepts = {c.code: c for c in loaded.concepts}
    glucose = concepts["2345-7"]
    assert glucose.display == "Glucose [Mass/volume] in Serum or Plasma"
    assert glucose.active
    assert glucose.properties["COMPONENT"] == ("Glucose",)
    assert glucose.properties["PROPERTY"] == ("MCnc",)
    assert glucose.properties["SYSTEM"] == ("Ser/Plas",)
    assert glucose.properties["CLASSTYPE"] == ("Laboratory class",)
    assert glucose.properties["EXAMPLE_UCUM_UNITS"] == ("mg/dL",)
    by_use = {(d.language, d.use_code, d.value) for d in glucose.designations}
    assert ("en", FSN, "Glucose:MCnc:Pt:Ser/Plas:Qn") in by_use
    assert ("en", SYNONYM, "Glucose SerPl-mCnc") in by_use
    assert ("zh-CN", SYNONYM, "葡萄糖 [质量/体积] 于 血清或血浆") in by_use
    assert not concepts["14682-9"].active
    assert concepts["14682-9"].properties["STATUS"] == ("DEPRECATED",)


@pytest.mark.parametrize("code, ok", [("2345-7", True), ("2823-3", True), ("33914-3", True),
                                      ("2345-8", False), ("glucose", False)])
def test_loinc_check_digit(code: str, ok: bool) -> None:
    assert check_digit_ok(code) is ok


def test_loinc_tab_separated_file_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "Loinc.csv"
    path.write_text("\t".join(LOINC_COLUMNS) + "\n", encoding="utf-8")
    with pytest.raises(LoadError, match=r"Loinc\.csv, line 1: missing column .*tab-separated"):
        list(load_loinc(path).concepts)


def test_loinc_bad_code_names_the_line(tmp_path: Path) -> None:
    path = _write_loinc_release(tmp_path)
    with path.open("a", newline="", encoding="utf-8") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerow(
            _loinc_row("GLU", "Glucose", "MCnc", "Bld", "", "", ""))
    with pytest.raises(LoadError, match=r"Loinc\.csv, line 5: LOINC_NUM 'GLU'"):
        list(load_loinc(path).concepts)


# --- SNOMED CT RF2 ---------------------------------------------------------------------

def _rf2(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\r\n".join([header, *rows]) + "\r\n", encoding="utf-8")


INT = "900000000000207008"


def _write_rf2(root: Path, *, refset: bool = True) -> Path:
    snap = root / "SnomedCT_InternationalRF2_PRODUCTION_20230131T120000Z" / "Snapshot"
    term = snap / "Terminology"
    _rf2(term / "sct2_Concept_Snapshot_INT_20230131.txt",
         "id\teffectiveTime\tactive\tmoduleId\tdefinitionStatusId", [
             f"73211009\t20020131\t1\t{INT}\t900000000000074008",
             f"362969004\t20020131\t1\t{INT}\t900000000000073002",
             f"44054006\t20230131\t1\t{INT}\t900000000000073002",
             f"190330002\t20020131\t0\t{INT}\t900000000000074008",
         ])
    d = "\t".join(["id", "effectiveTime", "active", "moduleId", "conceptId", "languageCode",
                   "typeId", "term", "caseSignificanceId"])
    cs = "900000000000448009"
    _rf2(term / "sct2_Description_Snapshot-en_INT_20230131.txt", d, [
        f"121589010\t20020131\t1\t{INT}\t73211009\ten\t900000000000013009\tDiabetes mellitus\t{cs}",
        f"1223980014\t20170731\t1\t{INT}\t73211009\ten\t900000000000003001\t"
        f"Diabetes mellitus (disorder)\t{cs}",
        f"1234567014\t20020131\t0\t{INT}\t73211009\ten\t900000000000013009\tDM - old\t{cs}",
        f"2475862019\t20020131\t1\t{INT}\t362969004\ten\t900000000000013009\t"
        f"Disorder of endocrine system\t{cs}",
        f"3302453016\t20230131\t1\t{INT}\t44054006\ten\t900000000000013009\t"
        f"Type 2 diabetes mellitus\t{cs}",
        f"197761014\t20020131\t1\t{INT}\t44054006\ten\t900000000000013009\t"
        f"Diabetes mellitus type 2\t{cs}",
        f"3302454010\t20230131\t1\t{INT}\t44054006\ten\t900000000000003001\t"
        f"Type 2 diabetes mellitus (disorder)\t{cs}",
    ])
    _rf2(term / "sct2_Relationship_Snapshot_INT_20230131.txt", "\t".join([
        "id", "effectiveTime", "active", "moduleId", "sourceId", "destinationId",
        "relationshipGroup", "typeId", "characteristicTypeId", "modifierId"]), [
        f"1\t20020131\t1\t{INT}\t73211009\t362969004\t0\t116680003\t900000000000011006\t"
        "900000000000451002",
        f"2\t20020131\t1\t{INT}\t44054006\t73211009\t0\t116680003\t900000000000011006\t"
        "900000000000451002",
        f"3\t20020131\t0\t{INT}\t44054006\t190330002\t0\t116680003\t900000000000011006\t"
        "900000000000451002",
    ])
    if refset:
        lang = snap / "Refset" / "Language" / "der2_cRefset_LanguageSnapshot-en_INT_20230131.txt"
        _rf2(lang, "id\teffectiveTime\tactive\tmoduleId\trefsetId\treferencedComponentId\t"
                   "acceptabilityId", [
            f"a1\t20020131\t1\t{INT}\t900000000000509007\t121589010\t900000000000548007",
            f"a2\t20230131\t1\t{INT}\t900000000000509007\t3302453016\t900000000000548007",
            f"a3\t20230131\t1\t{INT}\t900000000000509007\t197761014\t900000000000549004",
        ])
    return root


def test_snomed_snapshot_gives_preferred_terms_parents_and_version(tmp_path: Path) -> None:
    loaded = load_snomed(_write_rf2(tmp_path), work_dir=tmp_path)
    assert loaded.header.url == "http://snomed.info/sct"
    assert loaded.header.version == f"http://snomed.info/sct/{INT}/version/20230131"
    assert loaded.header.hierarchy_meaning == "is-a"
    concepts = {c.code: c for c in loaded.concepts}
    dm = concepts["73211009"]
    assert dm.display == "Diabetes mellitus"
    assert dm.parents == ("362969004",)
    assert (FSN, "Diabetes mellitus (disorder)") in {(d.use_code, d.value)
                                                     for d in dm.designations}
    assert "DM - old" not in {d.value for d in dm.designations}  # inactive description
    assert dm.properties["sufficientlyDefined"] == (False,)
    t2 = concepts["44054006"]
    assert t2.display == "Type 2 diabetes mellitus"  # the preferred one, not the acceptable
    assert t2.parents == ("73211009",)  # the inactive is-a row is not a parent
    assert not concepts["190330002"].active
    assert list(tmp_path.glob("fhir-fusion-rf2-*")) == []  # staging file removed


def test_snomed_without_language_refset_uses_fsn_without_tag(tmp_path: Path) -> None:
    loaded = load_snomed(_write_rf2(tmp_path, refset=False), work_dir=tmp_path)
    concepts = {c.code: c for c in loaded.concepts}
    assert concepts["73211009"].display == "Diabetes mellitus"
    assert concepts["44054006"].display == "Type 2 diabetes mellitus"


def test_snomed_comma_separated_file_is_refused(tmp_path: Path) -> None:
    root = _write_rf2(tmp_path)
    concept_file = next(root.glob("**/sct2_Concept_Snapshot*.txt"))
    concept_file.write_text("id,effectiveTime,active,moduleId,definitionStatusId\n"
                            f"73211009,20020131,1,{INT},900000000000074008\n")
    with pytest.raises(LoadError, match=r"sct2_Concept_Snapshot_INT_20230131\.txt, line 1: "
                                        r"missing column .*comma-separated.*tab-separated"):
        load_snomed(root, work_dir=tmp_path)


def test_snomed_bad_active_flag_names_the_line(tmp_path: Path) -> None:
    root = _write_rf2(tmp_path)
    concept_file = next(root.glob("**/sct2_Concept_Snapshot*.txt"))
    with concept_file.open("a") as f:
        f.write(f"64572001\t20020131\tyes\t{INT}\t900000000000074008\r\n")
    with pytest.raises(LoadError, match=r"line 6: active is 'yes'"):
        load_snomed(root, work_dir=tmp_path)


def test_snomed_folder_without_concepts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="no sct2_Concept_Snapshot"):
        load_snomed(tmp_path)


# --- ClaML -----------------------------------------------------------------------------

ICD10_CLAML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE ClaML SYSTEM "ClaML.dtd">
<ClaML version="2.0.0">
  <Meta name="TopLevelSort" value="I II III IV"/>
  <Identifier authority="WHO" uid="icd10_2019"/>
  <Title name="ICD-10" version="2019" xml:lang="en">International Statistical Classification of Diseases and Related Health Problems 10th Revision</Title>
  <ClassKinds><ClassKind name="chapter"/><ClassKind name="block"/><ClassKind name="category"/></ClassKinds>
  <RubricKinds><RubricKind name="preferred"/><RubricKind name="inclusion"/><RubricKind name="exclusion"/></RubricKinds>
  <Class code="IV" kind="chapter">
    <SubClass code="E10-E14"/>
    <Rubric kind="preferred"><Label xml:lang="en">Endocrine, nutritional and metabolic diseases</Label></Rubric>
  </Class>
  <Class code="E10-E14" kind="block">
    <SuperClass code="IV"/>
    <SubClass code="E10"/><SubClass code="E11"/>
    <Rubric kind="preferred"><Label xml:lang="en">Diabetes mellitus</Label></Rubric>
  </Class>
  <Class code="E11" kind="category">
    <SuperClass code="E10-E14"/>
    <SubClass code="E11.9"/>
    <Rubric kind="preferred"><Label xml:lang="en">Type 2 diabetes mellitus</Label></Rubric>
    <Rubric kind="preferred"><Label xml:lang="zh">2型糖尿病</Label></Rubric>
    <Rubric kind="inclusion"><Label xml:lang="en">Diabetes (mellitus)(nonobese)(obese): <Fragment>adult-onset</Fragment></Label></Rubric>
    <Rubric kind="exclusion"><Label xml:lang="en">diabetes mellitus in pregnancy (<Reference>O24.-</Reference>)</Label></Rubric>
  </Class>
  <Class code="E11.9" kind="category">
    <SuperClass code="E11"/>
    <Rubric kind="preferred"><Label xml:lang="en">Type 2 diabetes mellitus without complications</Label></Rubric>
  </Class>
</ClaML>
"""


def test_icd10_claml_gives_hierarchy_displays_and_inclusions(tmp_path: Path) -> None:
    path = tmp_path / "icd102019en.xml"
    path.write_text(ICD10_CLAML, encoding="utf-8")
    loaded = load_icd10(path)
    assert loaded.header.url == ICD10_URL
    assert loaded.header.version == "2019"
    assert loaded.header.title.startswith("International Statistical Classification")
    concepts = {c.code: c for c in loaded.concepts}
    assert list(concepts) == ["IV", "E10-E14", "E11", "E11.9"]
    assert concepts["E10-E14"].display == "Diabetes mellitus"
    assert concepts["E10-E14"].properties["kind"] == ("block",)
    assert concepts["E10-E14"].parents == ("IV",)
    e11 = concepts["E11"]
    assert e11.display == "Type 2 diabetes mellitus"
    assert e11.parents == ("E10-E14",)
    assert e11.properties["kind"] == ("category",)
    values = {(d.language, d.use_code, d.value) for d in e11.designations}
    assert ("zh", SYNONYM, "2型糖尿病") in values
    assert ("en", "inclusion", "Diabetes (mellitus)(nonobese)(obese): adult-onset") in values
    assert not any("pregnancy" in d.value for d in e11.designations)


def test_icd11_claml_uses_the_mms_url(tmp_path: Path) -> None:
    path = tmp_path / "icd11.xml"
    path.write_text("""<?xml version="1.0"?><ClaML version="2.0.0">
      <Title name="ICD-11 MMS" version="2024-01">ICD-11 for Mortality and Morbidity Statistics</Title>
      <Class code="05" kind="chapter"><Rubric kind="preferred"><Label xml:lang="en">Endocrine, nutritional or metabolic diseases</Label></Rubric></Class>
      <Class code="5A11" kind="category"><SuperClass code="05"/><Rubric kind="preferred"><Label xml:lang="en">Type 2 diabetes mellitus</Label></Rubric></Class>
    </ClaML>""", encoding="utf-8")
    loaded = load_icd11(path)
    assert loaded.header.url == "http://id.who.int/icd/release/11/mms"
    assert loaded.header.version == "2024-01"
    concepts = {c.code: c for c in loaded.concepts}
    assert concepts["5A11"].display == "Type 2 diabetes mellitus"
    assert concepts["5A11"].parents == ("05",)


def test_claml_not_xml_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "icd10.xml"
    path.write_text("<ClaML>\n<Class code='E11'>\n</ClaML>\n", encoding="utf-8")
    with pytest.raises(LoadError, match=r"icd10\.xml, line 3: is not well-formed XML"):
        list(load_icd10(path).concepts)


def test_claml_csv_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "icd10.csv"
    path.write_text("code,display\nE11,Type 2 diabetes mellitus\n", encoding="utf-8")
    with pytest.raises(LoadError, match=r"icd10\.csv, line 1: is not well-formed XML"):
        load_icd10(path)


# --- code lists ------------------------------------------------------------------------

def test_codelist_csv_with_semicolons_languages_and_parents(tmp_path: Path) -> None:
    path = tmp_path / "lab_codes.csv"
    path.write_text("Code;Name;Name_zh;Group;Status\n"
                    "CHEM;Chemistry;生化;;\n"
                    "GLU;Glucose, serum;血清葡萄糖;CHEM;active\n"
                    "K;Potassium;钾;CHEM;retired\n", encoding="utf-8")
    loaded = load_codelist(path, url="http://hospital-a.example/fhir/CodeSystem/lab",
                           columns=Columns(code="Code", display="Name", parent="Group",
                                           status="Status", languages={"zh-CN": "Name_zh"}))
    assert loaded.header.hierarchy_meaning == "is-a"
    concepts = {c.code: c for c in loaded.concepts}
    glu = concepts["GLU"]
    assert glu.display == "Glucose, serum"
    assert glu.parents == ("CHEM",)
    assert ("zh-CN", "血清葡萄糖") in {(d.language, d.value) for d in glu.designations}
    assert not concepts["K"].active
    assert concepts["CHEM"].parents == ()


def test_codelist_xlsx(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "ICD-10"
    sheet.append(["code", "display"])
    sheet.append(["E11", "Type 2 diabetes mellitus"])
    sheet.append(["E11.9", "Type 2 diabetes mellitus without complications"])
    path = tmp_path / "national.xlsx"
    book.save(path)
    loaded = load_codelist(path, url="http://example.org/icd-10-national", sheet="ICD-10")
    assert [(c.code, c.display) for c in loaded.concepts] == [
        ("E11", "Type 2 diabetes mellitus"),
        ("E11.9", "Type 2 diabetes mellitus without complications")]


def test_codelist_missing_column_and_duplicate_code(tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    path.write_text("Code,Label\nGLU,Glucose\n", encoding="utf-8")
    with pytest.raises(LoadError, match=r"codes\.csv, line 1: missing column display"):
        list(load_codelist(path, url="http://x.example/cs", columns=Columns(code="Code")).concepts)
    path.write_text("code,display\nGLU,Glucose\nGLU,Glucose again\n", encoding="utf-8")
    with pytest.raises(LoadError, match=r"codes\.csv, line 3: code 'GLU' again \(first on line 2"):
        list(load_codelist(path, url="http://x.example/cs").concepts)


def test_codelist_without_url_or_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "codes.xlsx"
    path.write_text("code,display\n")
    with pytest.raises(LoadError, match="needs the URL"):
        load_codelist(path)
    with pytest.raises(LoadError, match=r"codes\.xlsx: is not an Excel workbook"):
        list(load_codelist(path, url="http://x.example/cs").concepts)
