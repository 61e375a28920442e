"""CSV files through the pipeline into a real SQLite store: every sample under
../shared/samples/csv either translates (values from the file asserted) or is refused
with the reason stated here; bad rows kept with their line numbers and re-processable;
the same file twice stores nothing new; ConceptMaps from the store applied."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.csv.ingest import ingest_csv
from adapters.csv.reader import CsvFormatError
from adapters.pipeline import Pipeline
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore
from search.query import parse_search

pytestmark = pytest.mark.anyio

CSV = Path(__file__).resolve().parents[2] / "shared" / "samples" / "csv"
EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "csv-examples"
CTX = Context()
SYNTHEA = "https://github.com/synthetichealth/synthea"
OBS_PATIENTS = ("838e3532-0deb-eb80-3c5e-f5b4c243efaa", "082958ec-4275-02ee-d5fa-3fdbd595eebb")


async def find(store: SQLiteStore, rtype: str, *params: tuple[str, str]) -> list[dict[str, Any]]:
    page = await store.search(CTX, parse_search(rtype, [*params, ("_count", "500")]))
    return [m.resource for m in page.resources if m.resource is not None]


async def count(store: SQLiteStore, rtype: str) -> int:
    page = await store.search(CTX, parse_search(rtype, [("_summary", "count")]))
    assert page.total is not None
    return page.total


async def load_observation_patients(pipeline: Pipeline) -> None:
    """The two patients of the observations excerpt (they are not in synthea_patients.csv,
    which comes from another Synthea run), as a patients CSV made here."""
    text = "Id,BIRTHDATE,FIRST,LAST,GENDER\n" + "".join(
        f"{pid},1990-01-0{n + 1},Test{n},Patient{n},F\n" for n, pid in enumerate(OBS_PATIENTS))
    summary = await ingest_csv(pipeline, CTX, text.encode(), "patients")
    assert summary.count("stored") == 2


async def test_synthea_patients_translate(store: SQLiteStore) -> None:
    pipeline = Pipeline(store)
    summary = await ingest_csv(pipeline, CTX, (CSV / "synthea_patients.csv").read_bytes(),
                               "patients")
    assert (summary.count("stored"), summary.count("rejected")) == (109, 0)
    (herbert,) = await find(store, "Patient",
                            ("identifier", f"{SYNTHEA}|07cb2889-a47c-bede-f317-57a3822ec014"))
    assert herbert["name"] == [{"prefix": ["Mr."], "given": ["Herbert"], "family": "Franecki",
                                "suffix": ["JD"]}]
    assert herbert["birthDate"] == "1992-05-18"
    assert herbert["gender"] == "male"
    assert {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-69-2367"} in herbert[
        "identifier"]
    assert herbert["address"][0] == {"line": ["1009 Franecki Way"], "city": "Avenel",
                                     "state": "New Jersey", "district": "Middlesex County",
                                     "postalCode": "07001"}  # leading zero kept: text
    assert herbert["maritalStatus"]["coding"][0]["code"] == "M"


async def test_reimport_of_the_same_file_creates_nothing_new(store: SQLiteStore) -> None:
    pipeline = Pipeline(store)
    data = (CSV / "synthea_patients.csv").read_bytes()
    await ingest_csv(pipeline, CTX, data, "patients")
    patients, provenances = await count(store, "Patient"), await count(store, "Provenance")
    again = await ingest_csv(pipeline, CTX, data, "patients")
    assert (again.count("duplicate"), again.count("stored")) == (109, 0)
    assert (await count(store, "Patient"), await count(store, "Provenance")) == (
        patients, provenances)
    counters = (await pipeline.counters(CTX))["csv"]
    assert (counters["received"], counters["stored"], counters["duplicate"]) == (218, 109, 109)
    # the same rows in other chunks (another chunk size): conditional creates, no new Patient
    third = await ingest_csv(pipeline, CTX, data, "patients", chunk_rows=7)
    assert third.count("rejected") == 0
    assert await count(store, "Patient") == patients


async def test_lab_results_and_vital_signs_from_the_observations_excerpt(
        store: SQLiteStore) -> None:
    pipeline = Pipeline(store)
    await load_observation_patients(pipeline)
    data = (CSV / "synthea_observations_excerpt.csv").read_bytes()
    labs = await ingest_csv(pipeline, CTX, data, "lab-results")
    # 22 laboratory rows; 18 vital signs and 2 social-history rows are not lab results
    assert (labs.count("stored"), labs.count("skipped"), labs.count("rejected")) == (22, 20, 0)
    vitals = await ingest_csv(pipeline, CTX, data, "vital-signs")
    assert (vitals.count("stored"), vitals.count("skipped")) == (18, 24)
    (hb,) = await find(store, "Observation", ("code", "http://loinc.org|718-7"),
                       ("date", "2020-02-06"))
    assert hb["valueQuantity"] == {
        "value": Decimal("16.8"), "unit": "g/dL", "system": "http://unitsofmeasure.org",
        "code": "g/dL",
        # the canonical form terminology/standardise.py adds: 16.8 g/dL = 168 g/L
        "extension": [{"url": "http://fhir-fusion.org/StructureDefinition/canonical-quantity",
                       "valueQuantity": {"value": 168, "unit": "g/L", "code": "g/L",
                                         "system": "http://unitsofmeasure.org"}}]}
    assert hb["category"][0]["coding"][0]["code"] == "laboratory"
    assert hb["effectiveDateTime"] == "2020-02-06T08:45:50Z"
    patient = (await find(store, "Patient", ("identifier", f"{SYNTHEA}|{OBS_PATIENTS[0]}")))[0]
    assert hb["subject"] == {"reference": f"Patient/{patient['id']}"}
    # precision kept: the file says 2.0, the stored JSON says 2.0
    pains = await find(store, "Observation", ("code", "http://loinc.org|72514-3"))
    assert len(pains) == 2
    raw = await store.read(CTX, "Observation", pains[0]["id"])
    assert raw is not None and b'"value":2.0,' in raw.body.replace(b" ", b"")
    assert pains[0]["valueQuantity"]["code"] == "{score}"
    (dia,) = await find(store, "Observation", ("code", "http://loinc.org|8462-4"),
                        ("date", "2013-11-10"))
    assert dia["valueQuantity"]["code"] == "mm[Hg]"
    assert dia["category"][0]["coding"][0]["code"] == "vital-signs"


async def test_rows_of_unknown_patients_are_rejected_then_recovered_by_retry(
        store: SQLiteStore) -> None:
    pipeline = Pipeline(store)
    data = (CSV / "synthea_observations_excerpt.csv").read_bytes()
    labs = await ingest_csv(pipeline, CTX, data, "lab-results")
    rejected = [row for row in labs.rows if row.status == "rejected"]
    assert [row.line for row in rejected] == [*range(12, 23), *range(32, 43)]
    assert rejected[0].reason is not None
    assert rejected[0].reason.startswith("line 12: ")
    assert "conditional reference to Patient matches no resource" in rejected[0].reason
    kept = await store.get_input(CTX, rejected[0].input_id or 0)
    assert kept is not None and kept.status == "rejected"
    envelope = json.loads(kept.content)
    assert envelope["mapping"] == "lab-results" and envelope["rows"][0][0] == 12
    assert envelope["rows"][0][1][4] == "6690-2"
    await load_observation_patients(pipeline)
    for row in rejected:
        assert (await pipeline.retry(CTX, row.input_id or 0)).status == "stored"
    assert await count(store, "Observation") == 22
    counters = (await pipeline.counters(CTX))["csv"]
    assert (counters["reprocessed"], counters["recovered"], counters["pending"]) == (22, 22, 0)
    # the file again: its good chunks are new inputs now, but no Observation is new
    await ingest_csv(pipeline, CTX, data, "lab-results")
    assert await count(store, "Observation") == 22


BAD_LABS = (
    "DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE\n"
    f"2024-03-01,{OBS_PATIENTS[0]},e1,laboratory,718-7,Hemoglobin,13.50,g/dl,numeric\n"
    f"2024-03-01,{OBS_PATIENTS[0]},e1,laboratory,2345-7,Glucose,high,mg/dL,numeric\n"
    f"31.02.2024,{OBS_PATIENTS[0]},e1,laboratory,2160-0,Creatinine,0.9,mg/dL,numeric\n"
    f"2024-03-01,{OBS_PATIENTS[0]},e1,laboratory,,\"no\ncode\",1,mg/dL,numeric\n"
    f"2024-03-01,{OBS_PATIENTS[0]},e1,laboratory,6690-2\n"
    f"01.03.2024,{OBS_PATIENTS[0]},e1,laboratory,777-3,Platelets,265.5,10*3/uL,numeric\n"
)


async def test_bad_rows_are_rejected_with_line_numbers_and_good_rows_stored(
        store: SQLiteStore) -> None:
    pipeline = Pipeline(store)
    await load_observation_patients(pipeline)
    summary = await ingest_csv(pipeline, CTX, BAD_LABS.encode(), "lab-results")
    outcome = {row.line: (row.status, row.reason) for row in summary.rows}
    assert outcome[2][0] == "stored" and outcome[8][0] == "stored"
    assert outcome[3] == ("rejected", "line 3: column VALUE is not a number")
    assert outcome[4][1] is not None and outcome[4][1].startswith(
        "line 4: column DATE is not a date/time")
    # the quoted description spans lines 5-6; the row is reported at line 5
    assert outcome[5] == ("rejected", "line 5: identity column CODE is empty")
    assert outcome[7] == ("rejected", "line 7: has 5 fields, the header 9")
    (hb,) = await find(store, "Observation", ("code", "http://loinc.org|718-7"))
    assert hb["valueQuantity"]["value"] == Decimal("13.50")
    assert str(hb["valueQuantity"]["value"]) == "13.50"
    assert hb["valueQuantity"]["code"] == "g/dL" and hb["valueQuantity"]["unit"] == "g/dl"
    (plt,) = await find(store, "Observation", ("code", "http://loinc.org|777-3"))
    assert plt["effectiveDateTime"] == "2024-03-01"  # DD.MM.YYYY
    # no patient data in the reasons: the bad value itself is never quoted
    assert all("high" not in (row.reason or "") for row in summary.rows)
    pending = await pipeline.rejected(CTX, "csv")
    assert len(pending) == 4
    still = await pipeline.retry(CTX, pending[-1].id)  # line 3, data unchanged
    assert (still.status, still.reason) == ("rejected", "line 3: column VALUE is not a number")


async def test_gb18030_file_with_chinese_dates_and_a_mapping_file(
        store: SQLiteStore, tmp_path: Path) -> None:
    mapping = tmp_path / "cn-patients.yaml"
    mapping.write_text(
        "name: cn-patients\nresource: Patient\n"
        "identity: {system: 'urn:example:his:patient', columns: [病人编号], write: create}\n"
        "columns:\n"
        "  - {column: 姓名, path: 'name[0].text', required: true}\n"
        "  - {column: 性别, path: gender, type: code, transform: [{map: {男: male, 女: female}}]}\n"
        "  - {column: 出生日期, path: birthDate, type: date, date_formats: [chinese]}\n",
        encoding="utf-8")
    text = "病人编号\t姓名\t性别\t出生日期\nH001\t王芳\t女\t1980年3月1日\nH002\t李娜\t女\t1975年12月31日\n"
    # two rows are too little text to detect the encoding (break-feeds F25): given
    summary = await ingest_csv(Pipeline(store), CTX, text.encode("gb18030"), str(mapping),
                               encoding="gb18030")
    assert summary.encoding == "gb18030" and summary.delimiter == "\t"
    assert summary.count("stored") == 2
    (wang,) = await find(store, "Patient", ("identifier", "urn:example:his:patient|H001"))
    assert (wang["name"][0]["text"], wang["gender"], wang["birthDate"]) == (
        "王芳", "female", "1980-03-01")


async def test_latin1_file_given_its_encoding(store: SQLiteStore) -> None:
    text = "Id,BIRTHDATE,FIRST,LAST,GENDER\nde-1,15.05.1980,Jürgen,Müller,M\n"
    summary = await ingest_csv(Pipeline(store), CTX, text.encode("latin-1"), "patients",
                               encoding="latin-1")
    assert summary.count("stored") == 1
    (patient,) = await find(store, "Patient", ("family", "Müller"))
    assert patient["name"][0]["given"] == ["Jürgen"] and patient["birthDate"] == "1980-05-15"


async def test_aktin_samples_with_the_example_mappings_and_a_concept_map(
        store: SQLiteStore) -> None:
    """The local observation types become LOINC through a ConceptMap loaded in the store;
    the units bpm and celsius become UCUM through the alias table."""
    async with store.transaction(CTX) as txn:
        await txn.create({
            "resourceType": "ConceptMap", "status": "active",
            "url": "urn:example:aktin:conceptmap:observation-type",
            "group": [{"source": "urn:example:aktin:observation-type",
                       "target": "http://loinc.org", "element": [
                           {"code": "heart_rate", "target": [
                               {"code": "8867-4", "display": "Heart rate",
                                "equivalence": "equivalent"}]},
                           {"code": "temperature", "target": [
                               {"code": "8310-5", "equivalence": "equivalent"}]},
                           {"code": "blood_glucose", "target": [
                               {"code": "2339-0", "equivalence": "narrower"}]}]}]})
    pipeline = Pipeline(store)
    patients = await ingest_csv(pipeline, CTX, (CSV / "aktin_patients.csv").read_bytes(),
                                str(EXAMPLES / "aktin-patients.yaml"))
    assert patients.count("stored") == 5
    (jane,) = await find(store, "Patient", ("identifier", "urn:example:aktin:patient|P002"))
    assert jane["name"][0] == {"given": ["Jane"], "family": "Smith"}
    assert jane["telecom"][0] == {"system": "email", "value": "jane.smith@example.com"}
    obs = await ingest_csv(pipeline, CTX, (CSV / "aktin_observations.csv").read_bytes(),
                           str(EXAMPLES / "aktin-observations.yaml"))
    assert obs.count("stored") == 6
    (hr,) = await find(store, "Observation", ("code", "http://loinc.org|8867-4"))
    assert hr["code"]["coding"] == [
        {"system": "urn:example:aktin:observation-type", "code": "heart_rate"},
        {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]
    assert hr["valueQuantity"] == {"value": Decimal("72"), "unit": "bpm",
                                   "system": "http://unitsofmeasure.org", "code": "/min"}
    (temp,) = await find(store, "Observation", ("code", "http://loinc.org|8310-5"))
    assert temp["valueQuantity"]["code"] == "Cel" and str(temp["valueQuantity"]["value"]) == "37.2"
    # "narrower" may not stand in for the source code: glucose keeps its local code only
    (glucose,) = await find(store, "Observation",
                            ("code", "urn:example:aktin:observation-type|blood_glucose"))
    assert len(glucose["code"]["coding"]) == 1
    conditions = await ingest_csv(pipeline, CTX, (CSV / "aktin_conditions.csv").read_bytes(),
                                  str(EXAMPLES / "aktin-conditions.yaml"))
    assert conditions.count("stored") == 5
    (asthma,) = await find(store, "Condition", ("code", "http://hl7.org/fhir/sid/icd-10|J45"))
    assert asthma["onsetDateTime"] == "2015-01-20"
    assert asthma["code"]["coding"][0]["display"] == "Asthma"


# The other samples have no mapping of their own: with a built-in mapping they are
# refused as a whole, before any row, naming the columns they lack.
@pytest.mark.parametrize(("sample", "mapping", "lacking"), [
    ("synthea_allergies.csv", "lab-results", "DATE, VALUE"),
    ("synthea_encounters.csv", "lab-results", "CATEGORY, DATE, ENCOUNTER, VALUE"),
    ("synthea_imaging_studies.csv", "lab-results", "CATEGORY, CODE, VALUE"),
    ("synthea_immunizations.csv", "vital-signs", "CATEGORY, VALUE"),
    ("aktin_patients.csv", "patients", "BIRTHDATE, GENDER, Id, LAST"),
])
async def test_samples_without_a_matching_mapping_are_refused_naming_the_columns(
        store: SQLiteStore, sample: str, mapping: str, lacking: str) -> None:
    with pytest.raises(CsvFormatError, match=f"lacks the column\\(s\\) {lacking} that mapping"):
        await ingest_csv(Pipeline(store), CTX, (CSV / sample).read_bytes(), mapping)
    assert await store.list_inputs(CTX) == []


async def test_concept_map_found_by_its_source_system_when_no_url_matches(
        store: SQLiteStore) -> None:
    from adapters.csv.concepts import code_translator

    async with store.transaction(CTX) as txn:
        await txn.create({
            "resourceType": "ConceptMap", "status": "active", "url": "urn:example:cm:1",
            "group": [{"source": "urn:example:lab-local", "target": "http://loinc.org",
                       "element": [{"code": "HB", "target": [
                           {"code": "718-7", "equivalence": "equivalent"}]}]}]})
    by_source = await code_translator(store, CTX, "urn:example:lab-local")
    assert by_source("HB", "urn:example:lab-local") == [
        {"system": "http://loinc.org", "code": "718-7"}]
    assert by_source("XX", "urn:example:lab-local") == []
    nothing = await code_translator(store, CTX, "urn:example:no-such-map")
    assert nothing("HB", "urn:example:lab-local") == []
