"""CSV reading: encodings (detected and given), delimiters, quoted fields with line
breaks, line numbers; cell values: national date formats, decimals, UCUM units; mapping
files and their errors."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from adapters.csv import mapping as csv_mapping
from adapters.csv.reader import CsvFormatError, open_text, records
from adapters.csv.translate import RowTranslator
from adapters.csv.values import parse_decimal, parse_when, transform, ucum_code

CHINESE = "病人编号,姓名,城市,出生日期\nP1,王芳,北京,1980年3月1日\nP2,李娜,上海,1975年12月31日\n"
GERMAN = "Nr;Name;Ort;Geburtsdatum\n1;Müller;Köln;15.05.1980\n2;Zoë Jäger;Düsseldorf;01.12.1975\n"


def read(data: bytes, encoding: str | None = None, delimiter: str | None = None):
    source = open_text(data, encoding, delimiter)
    header, rows = records(source)
    return source, header, list(rows)


@pytest.mark.parametrize("encoding", ["gb18030", "gbk", "utf-8"])
def test_chinese_text_is_detected_in_gb18030_gbk_and_utf8(encoding: str) -> None:
    text = CHINESE + "".join(f"P{i},{name},{city},1980年1月1日\n" for i, (name, city) in
                             enumerate([("张伟", "广州"), ("刘洋", "深圳"), ("陈静", "成都")] * 3))
    source, header, rows = read(text.encode(encoding))
    assert header == ["病人编号", "姓名", "城市", "出生日期"]
    assert [r.cells[1] for r in rows][:3] == ["王芳", "李娜", "张伟"]
    assert source.encoding.replace("_", "-") in ({"gb18030", "gbk"} if encoding != "utf-8"
                                                 else {"utf-8"})


def test_latin1_is_detected_and_semicolons_sniffed() -> None:
    text = GERMAN + "3;Jürgen Größer;Lübeck;02.02.1990\n" * 30
    source, header, rows = read(text.encode("latin-1"))
    assert source.delimiter == ";"
    assert header == ["Nr", "Name", "Ort", "Geburtsdatum"]
    assert [r.cells[1:3] for r in rows][:2] == [["Müller", "Köln"], ["Zoë Jäger", "Düsseldorf"]]


# break-feeds F25: one-row files read as the wrong encoding and stored garbled
@pytest.mark.parametrize("name,encoding", [
    ("王", "gb18030"), ("王芳", "gb18030"), ("欧阳", "gb18030"), ("李", "gb18030"),
    ("김 민준", "euc-kr"), ("山田 太郎", "shift-jis"), ("Ñúñez", "latin-1"),
    ("ÀÉÎÕÜ", "latin-1"), ("Zoë Jäger", "cp1252"),
])
def test_a_short_file_not_in_utf8_is_refused_asking_for_its_encoding(
        name: str, encoding: str) -> None:
    data = f"patient_id,last_name\nX1,{name}\n".encode(encoding)
    with pytest.raises(CsvFormatError, match="give it .--encoding"):
        read(data)
    _, _, rows = read(data, encoding=encoding)  # given, it is read as it is
    assert rows[0].cells[1] == name


@pytest.mark.parametrize("encoding,names", [
    ("euc-kr", ["김민준", "이서연", "박지호", "최하은", "정도윤"]),
    ("gb18030", ["王芳", "李娜", "陈伟", "张强", "刘敏"]),
    ("latin-1", ["Núñez", "Lefèvre", "Müller", "Jäger", "Ibáñez"]),
])
def test_a_file_with_enough_text_is_detected_right(encoding: str, names: list[str]) -> None:
    text = "id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names * 20))
    source, _, rows = read(text.encode(encoding))
    assert [r.cells[1] for r in rows] == names * 20
    assert source.encoding.replace("_", "-") == encoding.replace("latin-1", "cp1252")


def test_utf8_byte_order_mark_is_not_part_of_the_first_column() -> None:
    source, header, _ = read("\ufeffid,name\n1,Ärztin\n".encode())
    assert source.encoding == "utf-8-sig"
    assert header == ["id", "name"]


def test_given_encoding_wins_and_a_wrong_one_is_an_error_naming_it() -> None:
    _, _, rows = read(GERMAN.encode("latin-1"), encoding="latin-1")
    assert rows[0].cells[1] == "Müller"
    with pytest.raises(CsvFormatError, match="not valid utf-8"):
        read(GERMAN.encode("latin-1"), encoding="utf-8")
    with pytest.raises(CsvFormatError, match="unknown encoding"):
        read(b"a,b\n", encoding="klingon")


@pytest.mark.parametrize("delimiter", ["\t", "|", ","])
def test_delimiters_are_sniffed(delimiter: str) -> None:
    text = delimiter.join(["id", "value", "unit"]) + "\n" + delimiter.join(["1", "2.5", "mg"])
    source, header, rows = read(text.encode())
    assert source.delimiter == delimiter
    assert rows[0].cells == ["1", "2.5", "mg"]


def test_quoted_fields_with_line_breaks_keep_the_line_each_record_starts_on() -> None:
    text = ('id,note,value\n'
            '1,"first line\nsecond line",7\n'
            '\n'
            '2,"says ""hi"", twice",8\n'
            '3,"a\r\nb\r\nc",9\n'
            '4,plain,10\n')
    _, _, rows = read(text.encode())
    assert [r.line for r in rows] == [2, 5, 6, 9]
    assert rows[0].cells[1] == "first line\nsecond line"
    assert rows[1].cells[1] == 'says "hi", twice'
    assert rows[2].cells[1] == "a\r\nb\r\nc"


def test_an_empty_file_has_no_header() -> None:
    with pytest.raises(CsvFormatError, match="empty"):
        read(b"")


@pytest.mark.parametrize(("text", "formats", "expected"), [
    ("2024-03-01", [], "2024-03-01"),
    ("01.03.2024", [], "2024-03-01"),
    ("20240301", [], "2024-03-01"),
    ("2024年3月1日", [], "2024-03-01"),
    ("01/03/2024", ["DD/MM/YYYY"], "2024-03-01"),
    ("03/01/2024", ["MM/DD/YYYY"], "2024-03-01"),
    ("2020-02-06T08:45:50Z", [], "2020-02-06"),
])
def test_national_date_formats(text: str, formats: list[str], expected: str) -> None:
    assert parse_when(text, formats, "UTC", with_time=False) == expected


def test_date_times_keep_their_zone_or_take_the_mappings() -> None:
    assert parse_when("2020-02-06T08:45:50Z", [], "UTC", with_time=True) == "2020-02-06T08:45:50Z"
    assert parse_when("01.03.2024 08:30", ["DD.MM.YYYY HH:MM"], "Europe/Berlin",
                      with_time=True) == "2024-03-01T08:30:00+01:00"
    assert parse_when("2024年3月1日 8时30分", [], "Asia/Shanghai",
                      with_time=True) == "2024-03-01T08:30:00+08:00"
    # written as FHIR wants it: T between date and time, +hh:mm offsets
    assert parse_when("2024-03-01 08:30:00+0200", [], "UTC",
                      with_time=True) == "2024-03-01T08:30:00+02:00"
    assert parse_when("2024-03-01T08:30Z", [], "UTC", with_time=True) == "2024-03-01T08:30:00Z"


@pytest.mark.parametrize("text", ["2024-02-30", "31.02.2024", "yesterday", "01/03/2024",
                                  "2024-03-01T25:00:00Z"])
def test_impossible_or_ambiguous_dates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a date"):
        parse_when(text, [], "UTC", with_time=False)


def test_decimals_keep_their_precision() -> None:
    assert str(parse_decimal("1.50")) == "1.50"
    assert parse_decimal("1.50") == Decimal("1.50")
    assert str(parse_decimal("1,50", decimal_comma=True)) == "1.50"
    with pytest.raises(ValueError, match="not a number"):
        parse_decimal("12 mg")


@pytest.mark.parametrize(("unit", "code"), [
    ("mg/dl", "mg/dL"), ("mmHg", "mm[Hg]"), ("bpm", "/min"), ("celsius", "Cel"),
    ("10*3/uL", "10*3/uL"), ("{score}", "{score}"), ("fL", "fL"), ("kg/m2", "kg/m2"),
    ("mmol/l", "mmol/L"), ("banana", None),
])
def test_units_become_ucum_where_recognised(unit: str, code: str | None) -> None:
    assert ucum_code(unit) == code


def test_transforms_apply_in_order() -> None:
    assert transform("Herbert830", [{"replace": [r"\d+$", ""]}]) == "Herbert"
    assert transform("m", ["upper", {"map": {"M": "male", "*": "unknown"}}]) == "male"
    assert transform("x", [{"map": {"M": "male", "*": "unknown"}}]) == "unknown"


def test_built_in_mappings_are_packaged() -> None:
    assert {"patients", "lab-results", "vital-signs"} <= set(csv_mapping.builtin_names())
    lab = csv_mapping.load("lab-results")
    assert lab.resource == "Observation"
    assert lab.identity_columns == ("PATIENT", "ENCOUNTER", "DATE", "CODE")


def test_mapping_errors_name_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("resource: Observation\nidentity: {system: urn:x, columns: [id]}\n"
                   "columns:\n  - {column: v, path: valueQuantity, type: Quantiy}\n")
    with pytest.raises(csv_mapping.MappingError, match=r"columns\[0\]: type 'Quantiy'"):
        csv_mapping.load(bad)
    with pytest.raises(csv_mapping.MappingError, match="no built-in mapping 'labs'"):
        csv_mapping.load("labs")
    toml = tmp_path / "m.toml"
    toml.write_text('resource = "Patient"\n[identity]\nsystem = "urn:x"\ncolumns = ["id"]\n'
                    '[[columns]]\ncolumn = "name"\npath = "name[0].family"\n')
    assert csv_mapping.load(toml).columns[0].path == "name[0].family"


def test_a_header_without_the_mappings_columns_is_refused_naming_them() -> None:
    _, header, _ = read(b"observation_id,patient_id,value\n1,2,3\n")
    with pytest.raises(CsvFormatError, match="lacks the column.*CODE.*lab-results"):
        RowTranslator(csv_mapping.load("lab-results"), header, {})


def test_the_json_schema_lists_what_the_loader_takes() -> None:
    import json

    schema = json.loads((Path(__file__).resolve().parents[1] / "docs"
                         / "csv-mapping.schema.json").read_text())
    assert tuple(schema["properties"]["resource"]["enum"]) == csv_mapping.RESOURCE_TYPES
    column = schema["$defs"]["column"]["properties"]
    assert tuple(column["type"]["enum"]) == csv_mapping.VALUE_TYPES
    assert set(schema["properties"]) == {"name", "title", "description", "resource", "identity",
                                         "columns", "constants", "when", "date_formats",
                                         "timezone", "null_values"}
