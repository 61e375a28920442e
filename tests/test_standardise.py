"""Standardisation of incoming Observations (terminology/standardise.py): a source's
ConceptMap maps local lab codes to LOINC and local units to UCUM; quantities gain a
canonical UCUM value; unmapped codes and bad terminology are kept as warnings with the
input, never a reason to drop data.

The HL7v2 sample is google_oru_r01_ex6.hl7 (Simulated Hospital, MSH-3 SIMHOSP, MSH-4
SFAC): WinPath codes tt-0003-01..05 for creatinine, potassium, sodium, urea and eGFR, with
units MMOLL, UMOLL and MLMIN, none of which is UCUM."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from adapters.pipeline import IngestResult, Pipeline
from fhir_server.cli import main
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore
from search.query import parse_search
from terminology.model import CodeSystemHeader, Concept
from terminology.standardise import (
    CANONICAL_QUANTITY,
    CONTEXT_CODE,
    CONTEXT_TYPE,
    SOURCE_SYSTEM,
    SourceMaps,
    install,
    refresh,
    standardise_observation,
)

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "samples" / "hl7v2"
CTX = Context()
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
WINPATH = "urn:fhir-fusion:hl7v2:codesystem:WinPath"
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


def source_context(*sources: str) -> list[dict[str, Any]]:
    return [{"code": {"system": CONTEXT_TYPE, "code": CONTEXT_CODE},
             "valueCodeableConcept": {"coding": [{"system": SOURCE_SYSTEM, "code": s}
                                                 for s in sources]}}]


# Simulated Hospital's WinPath codes -> LOINC; urea (tt-0003-04) deliberately left out
SFAC_MAP: dict[str, Any] = {
    "resourceType": "ConceptMap",
    "url": "http://hospital.example/fhir/ConceptMap/sfac-winpath-to-loinc",
    "status": "active",
    "useContext": source_context("SFAC"),
    "group": [
        {"source": WINPATH, "target": LOINC, "element": [
            {"code": "tt-0003-01", "display": "Creatinine", "target": [{
                "code": "14682-9", "equivalence": "equivalent",
                "display": "Creatinine [Moles/volume] in Serum or Plasma"}]},
            {"code": "tt-0003-02", "display": "Potassium", "target": [{
                "code": "2823-3", "equivalence": "equivalent",
                "display": "Potassium [Moles/volume] in Serum or Plasma"}]},
            {"code": "tt-0003-03", "display": "Sodium", "target": [{
                "code": "2951-2", "equivalence": "equivalent",
                "display": "Sodium [Moles/volume] in Serum or Plasma"}]},
            {"code": "tt-0003-05", "display": "eGFR (MDRD)", "target": [{
                "code": "33914-3", "equivalence": "equivalent",
                "display": "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] "
                           "in Serum or Plasma by Creatinine-based formula (MDRD)"}]},
        ]},
        {"source": "urn:fhir-fusion:units:SFAC", "target": UCUM, "element": [
            {"code": "MMOLL", "target": [{"code": "mmol/L", "equivalence": "equal"}]},
            {"code": "UMOLL", "target": [{"code": "umol/L", "equivalence": "equal"}]},
            {"code": "MLMIN", "target": [{"code": "mL/min", "equivalence": "equal"}]},
        ]},
    ],
}


@pytest.fixture(autouse=True)
def no_installed_maps() -> Iterator[None]:
    """Each test starts and ends with no source maps installed."""
    install(SourceMaps())
    yield
    install(SourceMaps())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "fhir-fusion.sqlite3"  # the file `--data-dir` names (fhir_server/config.py)


async def _put(store: SQLiteStore, *resources: dict[str, Any]) -> None:
    async with store.transaction(CTX) as txn:
        for resource in resources:
            await txn.create(copy.deepcopy(resource))


async def _observations(store: SQLiteStore) -> dict[str, dict[str, Any]]:
    page = await store.search(CTX, parse_search("Observation", [("_count", "100")]))
    found = {}
    for stored in page.resources:
        assert stored.resource is not None
        found[stored.resource["code"]["coding"][0]["code"]] = stored.resource
    return found


async def _ingest_sample(db: Path, *concept_maps: dict[str, Any]
                         ) -> tuple[IngestResult, dict[str, dict[str, Any]]]:
    store = await SQLiteStore.open(db)
    try:
        await _put(store, *concept_maps)
        await refresh(store, CTX)
        result = await Pipeline(store).ingest(
            CTX, "hl7v2", (SAMPLE / "google_oru_r01_ex6.hl7").read_bytes())
        assert result.status == "stored", result.reason
        return result, await _observations(store)
    finally:
        await store.close()


def test_hl7v2_local_codes_gain_loinc_and_units_gain_ucum(db: Path) -> None:
    result, observations = run(_ingest_sample(db, SFAC_MAP))

    potassium = observations["tt-0003-02"]
    assert potassium["code"]["coding"] == [
        {"system": WINPATH, "code": "tt-0003-02", "display": "Potassium"},
        {"system": LOINC, "code": "2823-3",
         "display": "Potassium [Moles/volume] in Serum or Plasma", "userSelected": False},
    ]
    # the unit text is kept as sent; the map names its UCUM code; mmol/L is canonical
    assert potassium["valueQuantity"] == {"value": Decimal("5.10"), "unit": "MMOLL",
                                          "system": UCUM, "code": "mmol/L"}
    creatinine = observations["tt-0003-01"]
    assert [c["code"] for c in creatinine["code"]["coding"]] == ["tt-0003-01", "14682-9"]
    assert creatinine["valueQuantity"]["code"] == "umol/L"
    assert creatinine["valueQuantity"]["extension"] == [{
        "url": CANONICAL_QUANTITY,
        "valueQuantity": {"value": Decimal("0.08625"), "unit": "mmol/L", "system": UCUM,
                          "code": "mmol/L"}}]
    egfr = observations["tt-0003-05"]
    assert egfr["code"]["coding"][1]["code"] == "33914-3"
    assert egfr["valueQuantity"]["comparator"] == "<"
    assert egfr["valueQuantity"]["code"] == "mL/min"

    # urea has no mapping: kept with its local code only, and listed with the input
    urea = observations["tt-0003-04"]
    assert urea["code"]["coding"] == [{"system": WINPATH, "code": "tt-0003-04",
                                       "display": "Urea"}]
    terminology = result.result["details"]["terminology"]  # type: ignore[index]
    assert terminology["sources"] == ["SFAC/SIMHOSP", "SFAC", "SIMHOSP"]
    assert terminology["mapped"] == 4
    assert terminology["unmapped"] == [{"system": WINPATH, "code": "tt-0003-04", "count": 1,
                                        "display": "Urea"}]
    assert "outcome" not in terminology  # no warnings: every unit is mapped


def test_search_finds_a_mapped_unit_by_its_ucum_code(db: Path) -> None:
    async def scenario() -> list[str]:
        await _ingest_sample(db, SFAC_MAP)
        store = await SQLiteStore.open(db)
        try:
            # sent as "145.01 MMOLL": found as mmol/L, and as mol/L through the canonical form
            page = await store.search(CTX, parse_search("Observation", [
                ("code", f"{LOINC}|2951-2"), ("value-quantity", f"0.14501|{UCUM}|mol/L")]))
            return [r.resource["valueQuantity"]["unit"] for r in page.resources if r.resource]
        finally:
            await store.close()

    assert run(scenario()) == ["MMOLL"]


def test_without_a_map_every_local_code_is_listed_and_units_warned(db: Path) -> None:
    result, observations = run(_ingest_sample(db))
    assert len(observations) == 5
    terminology = result.result["details"]["terminology"]  # type: ignore[index]
    assert sorted(e["code"] for e in terminology["unmapped"]) == [
        "tt-0003-01", "tt-0003-02", "tt-0003-03", "tt-0003-04", "tt-0003-05"]
    issues = terminology["outcome"]["issue"]
    assert {i["severity"] for i in issues} == {"warning"}
    assert {i["diagnostics"] for i in issues} == {
        f"unit {u!r} is not UCUM and the unit map of SFAC/SIMHOSP does not name it"
        for u in ("MMOLL", "UMOLL", "MLMIN")}


def test_unmapped_command_lists_codes_per_source(db: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run(_ingest_sample(db, SFAC_MAP))
    assert main(["terminology", "unmapped", "--data-dir", str(db.parent)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["source\tsystem\tcode\tdisplay\tcount\tinputs",
                     f"SFAC/SIMHOSP\t{WINPATH}\ttt-0003-04\tUrea\t1\t1"]
    assert main(["terminology", "unmapped", "--source", "OTHERHOSP",
                 "--data-dir", str(db.parent)]) == 0
    assert capsys.readouterr().out.strip() == "no unmapped codes for source OTHERHOSP"


def test_concept_map_loop_is_a_warning_and_the_data_is_stored(db: Path) -> None:
    looped = copy.deepcopy(SFAC_MAP)
    looped["url"] = "http://hospital.example/fhir/ConceptMap/sfac-loop"
    # potassium -> sodium's code -> potassium again, inside WinPath
    looped["group"].insert(0, {"source": WINPATH, "target": WINPATH, "element": [
        {"code": "tt-0003-02", "target": [{"code": "tt-0003-03", "equivalence": "equivalent"}]},
        {"code": "tt-0003-03", "target": [{"code": "tt-0003-02", "equivalence": "equivalent"}]},
    ]})
    looped["group"][1]["element"] = [e for e in looped["group"][1]["element"]
                                      if e["code"] not in {"tt-0003-02", "tt-0003-03"}]
    result, observations = run(_ingest_sample(db, looped))
    assert len(observations) == 5  # nothing lost
    assert observations["tt-0003-02"]["code"]["coding"] == [
        {"system": WINPATH, "code": "tt-0003-02", "display": "Potassium"}]
    assert observations["tt-0003-01"]["code"]["coding"][1]["code"] == "14682-9"
    terminology = result.result["details"]["terminology"]  # type: ignore[index]
    diagnostics = [i["diagnostics"] for i in terminology["outcome"]["issue"]]
    assert ("ConceptMap http://hospital.example/fhir/ConceptMap/sfac-loop has a loop "
            "(tt-0003-02 -> tt-0003-03 -> tt-0003-02); 'tt-0003-02' is left unmapped"
            ) in diagnostics
    assert sorted(e["code"] for e in terminology["unmapped"]) == [
        "tt-0003-02", "tt-0003-03", "tt-0003-04"]


def test_concept_map_chain_is_not_followed() -> None:
    chain = {"resourceType": "ConceptMap", "url": "urn:test:chain",
             "useContext": source_context("LAB1"),
             "group": [{"source": "urn:lab1", "target": "urn:lab1", "element": [
                 {"code": "GLU-OLD", "target": [{"code": "GLU", "equivalence": "equivalent"}]}]},
                 {"source": "urn:lab1", "target": LOINC, "element": [
                     {"code": "GLU", "target": [{"code": "2345-7",
                                                 "equivalence": "equivalent"}]}]}]}
    maps = SourceMaps([(None, chain)])
    old = {"resourceType": "Observation", "code": {"coding": [{"system": "urn:lab1",
                                                                "code": "GLU-OLD"}]}}
    report = standardise_observation(old, "LAB1", maps=maps)
    assert len(old["code"]["coding"]) == 1
    assert [i.diagnostics for i in report.issues.values()] == [
        "ConceptMap urn:test:chain has a chain (GLU-OLD -> GLU -> 2345-7); maps are applied "
        "one step, so 'GLU-OLD' is left unmapped"]
    current = {"resourceType": "Observation", "code": {"coding": [{"system": "urn:lab1",
                                                                    "code": "GLU"}]}}
    standardise_observation(current, "LAB1", maps=maps, report=report)
    assert current["code"]["coding"][1] == {"system": LOINC, "code": "2345-7",
                                            "userSelected": False}


def glucose(value: str, unit: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "2345-7"}]},
            "valueQuantity": {"value": Decimal(value), "unit": unit, "system": UCUM,
                              "code": unit}}


@pytest.mark.parametrize(("value", "unit", "canonical"), [
    pytest.param("100", "mg/dL", ("1.00", "g/L"), id="mass-concentration-to-g/L"),
    pytest.param("1", "g/L", None, id="g/L-is-canonical"),
    pytest.param("5.5", "mmol/L", None, id="molar-stays-molar"),
    pytest.param("99", "mg/L", ("0.099", "g/L"), id="mg/L"),
    pytest.param("5500", "umol/L", ("5.500", "mmol/L"), id="umol/L-to-mmol/L"),
    pytest.param("98.6", "[degF]", ("37.0", "Cel"), id="fahrenheit"),
    pytest.param("7.5", "10*3/uL", ("7.5", "10*9/L"), id="cell-count"),
    pytest.param("12", "[IU]/L", None, id="arbitrary-unit-not-convertible"),
])
def test_quantity_canonical_form(value: str, unit: str,
                                 canonical: tuple[str, str] | None) -> None:
    obs = glucose(value, unit)
    report = standardise_observation(obs, "LAB1", maps=SourceMaps())
    quantity = obs["valueQuantity"]
    assert quantity["value"] == Decimal(value) and quantity["unit"] == unit  # kept as sent
    if canonical is None:
        assert "extension" not in quantity
    else:
        assert quantity["extension"] == [{"url": CANONICAL_QUANTITY, "valueQuantity": {
            "value": Decimal(canonical[0]), "unit": canonical[1], "system": UCUM,
            "code": canonical[1]}}]
        assert str(quantity["extension"][0]["valueQuantity"]["value"]) == canonical[0]
    assert not report.issues


def test_bad_loinc_code_and_bad_ucum_unit_are_warnings() -> None:
    obs = glucose("100", "MG/DL")
    obs["code"]["coding"][0]["code"] = "2345-8"  # wrong check digit (2345-7 is glucose)
    report = standardise_observation(obs, "LAB1", maps=SourceMaps())
    assert obs["valueQuantity"] == {"value": Decimal("100"), "unit": "MG/DL", "system": UCUM,
                                    "code": "MG/DL"}  # kept, but no canonical form
    outcome = report.outcome()
    assert outcome == {"resourceType": "OperationOutcome", "issue": [
        {"severity": "warning", "code": "code-invalid",
         "diagnostics": "'2345-8' is not a LOINC code (check digit)",
         "expression": ["Observation.code.coding[0]"]},
        {"severity": "warning", "code": "code-invalid",
         "diagnostics": "unit 'MG/DL' is not a UCUM unit",
         "expression": ["Observation.valueQuantity.code"]},
    ]}


def test_map_target_with_bad_check_digit_is_broken() -> None:
    bad = {"resourceType": "ConceptMap", "url": "urn:test:bad", "useContext": source_context("L"),
           "group": [{"target": LOINC, "element": [
               {"code": "K", "target": [{"code": "2823-4", "equivalence": "equivalent"}]}]}]}
    obs = {"resourceType": "Observation", "code": {"coding": [{"code": "K"}]}}
    report = standardise_observation(obs, "L", maps=SourceMaps([(None, bad)]))
    assert len(obs["code"]["coding"]) == 1
    assert [i.diagnostics for i in report.issues.values()] == [
        "ConceptMap urn:test:bad maps 'K' to '2823-4', which is not a LOINC code (check digit)"]
    assert list(report.unmapped) == [("", "K")]


def test_narrower_targets_are_not_used_and_specific_source_wins() -> None:
    facility = {"resourceType": "ConceptMap", "url": "urn:test:facility",
                "useContext": source_context("HOSP"),
                "group": [{"target": LOINC, "element": [
                    {"code": "GLU", "target": [{"code": "2345-7", "equivalence": "equivalent"}]},
                    {"code": "BG", "target": [{"code": "2339-0", "equivalence": "narrower"}]}]}]}
    analyser = {"resourceType": "ConceptMap", "url": "urn:test:analyser",
                "useContext": source_context("HOSP/COBAS"),
                "group": [{"target": LOINC, "element": [
                    {"code": "GLU", "target": [{"code": "14749-6",
                                                "equivalence": "equivalent"}]}]}]}
    maps = SourceMaps([(None, facility), (None, analyser)])
    from_analyser = {"resourceType": "Observation", "code": {"coding": [{"code": "GLU"}]}}
    standardise_observation(from_analyser, ["HOSP/COBAS", "HOSP"], maps=maps)
    assert from_analyser["code"]["coding"][1]["code"] == "14749-6"
    from_ward = {"resourceType": "Observation", "code": {"coding": [{"code": "GLU"}]}}
    standardise_observation(from_ward, ["HOSP/WARD", "HOSP"], maps=maps)
    assert from_ward["code"]["coding"][1]["code"] == "2345-7"
    narrower = {"resourceType": "Observation", "code": {"coding": [{"code": "BG"}]}}
    report = standardise_observation(narrower, ["HOSP"], maps=maps)
    assert len(narrower["code"]["coding"]) == 1 and list(report.unmapped) == [("", "BG")]


def test_target_not_in_the_loaded_code_system_is_a_warning(db: Path) -> None:
    async def scenario() -> tuple[IngestResult, dict[str, dict[str, Any]]]:
        store = await SQLiteStore.open(db)
        try:
            from terminology.store import concept_store

            header = CodeSystemHeader(url=LOINC, version="2.77", name="LOINC")
            await concept_store(store).load_code_system(CTX, header, [
                Concept("2823-3", "Potassium [Moles/volume] in Serum or Plasma"),
                Concept("2951-2", "Sodium [Moles/volume] in Serum or Plasma"),
                Concept("14682-9", "Creatinine [Moles/volume] in Serum or Plasma"),
            ])  # 33914-3 (eGFR) is not loaded
        finally:
            await store.close()
        return await _ingest_sample(db, SFAC_MAP)

    result, observations = run(scenario())
    assert len(observations["tt-0003-05"]["code"]["coding"]) == 1
    assert observations["tt-0003-02"]["code"]["coding"][1]["code"] == "2823-3"
    terminology = result.result["details"]["terminology"]  # type: ignore[index]
    assert [i["diagnostics"] for i in terminology["outcome"]["issue"]] == [
        "ConceptMap http://hospital.example/fhir/ConceptMap/sfac-winpath-to-loinc maps "
        "'tt-0003-05' to '33914-3', which is not in http://loinc.org (version 2.77)"]


def test_csv_feed_applies_the_source_map_of_its_mapping(db: Path) -> None:
    """The AKTIN sample with the example mapping docs/csv-examples/aktin-observations.yaml:
    the source is the mapping's name; glucose gains LOINC 2339-0 and its value in g/L,
    weight is mapped too, the rest is listed as unmapped."""
    from adapters.csv.ingest import ingest_csv

    csv_samples = SAMPLE.parent / "csv"
    mapping = Path(__file__).resolve().parents[1] / "docs" / "csv-examples"
    aktin = {"resourceType": "ConceptMap", "url": "urn:example:aktin:source-map",
             "status": "active", "useContext": source_context("aktin-observations"),
             "group": [{"source": "urn:example:aktin:observation-type", "target": LOINC,
                        "element": [
                            {"code": "blood_glucose", "target": [{
                                "code": "2339-0", "equivalence": "equivalent",
                                "display": "Glucose [Mass/volume] in Blood"}]},
                            {"code": "weight", "target": [{
                                "code": "29463-7", "equivalence": "equivalent",
                                "display": "Body weight"}]}]}]}

    async def scenario() -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        store = await SQLiteStore.open(db)
        try:
            await _put(store, aktin)
            pipeline = Pipeline(store)
            await ingest_csv(pipeline, CTX, (csv_samples / "aktin_patients.csv").read_bytes(),
                             str(mapping / "aktin-patients.yaml"))
            summary = await ingest_csv(
                pipeline, CTX, (csv_samples / "aktin_observations.csv").read_bytes(),
                str(mapping / "aktin-observations.yaml"))
            assert summary.count("stored") == 6
            inputs = await store.list_inputs(CTX, feed="csv", status="stored", limit=10)
            details = [i.result["details"] for i in inputs if i.result]
            return await _observations(store), details
        finally:
            await store.close()

    observations, details = run(scenario())
    glucose = observations["blood_glucose"]
    assert glucose["code"]["coding"][1] == {"system": LOINC, "code": "2339-0",
                                            "display": "Glucose [Mass/volume] in Blood",
                                            "userSelected": False}
    assert glucose["valueQuantity"]["extension"][0]["valueQuantity"] == {
        "value": Decimal("0.95"), "unit": "g/L", "system": UCUM, "code": "g/L"}
    assert observations["weight"]["code"]["coding"][1]["code"] == "29463-7"
    (terminology,) = [d["terminology"] for d in details if d.get("mapping") ==
                      "aktin-observations"]
    assert terminology["sources"] == ["aktin-observations"]
    assert terminology["mapped"] == 2
    assert sorted(e["code"] for e in terminology["unmapped"]) == [
        "blood_pressure", "heart_rate", "height", "temperature"]


def test_maps_command_lists_sources_and_problems(db: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad_unit = copy.deepcopy(SFAC_MAP)
    bad_unit["url"] = "urn:test:bad-unit"
    bad_unit["useContext"] = source_context("OTHERLAB")
    bad_unit["group"][1]["element"] = [
        {"code": "MGDL", "target": [{"code": "MG/DL", "equivalence": "equal"}]}]

    async def put() -> None:
        store = await SQLiteStore.open(db)
        try:
            await _put(store, SFAC_MAP, bad_unit)
        finally:
            await store.close()

    run(put())
    assert main(["terminology", "maps", "--data-dir", str(db.parent)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "source\tconcept map\tcodes\tunits",
        "OTHERLAB\turn:test:bad-unit\t4\t0",
        f"SFAC\t{SFAC_MAP['url']}\t4\t3",
        "warning: ConceptMap urn:test:bad-unit maps unit 'MGDL' to a non-UCUM code "
        "(unit 'MG/DL' is not a UCUM unit)"]


def test_unit_mapped_to_a_non_ucum_code_is_a_warning_and_the_unit_kept() -> None:
    bad = {"resourceType": "ConceptMap", "url": "urn:test:units",
           "useContext": source_context("LAB1"),
           "group": [{"target": UCUM, "element": [
               {"code": "MGDL", "target": [{"code": "MG/DL", "equivalence": "equal"}]}]}]}
    obs = {"resourceType": "Observation",
           "code": {"coding": [{"system": LOINC, "code": "2345-7"}]},
           "valueQuantity": {"value": Decimal("98"), "unit": "MGDL"}}
    report = standardise_observation(obs, "LAB1", maps=SourceMaps([(None, bad)]))
    assert obs["valueQuantity"] == {"value": Decimal("98"), "unit": "MGDL"}
    assert [i.diagnostics for i in report.issues.values()] == [
        "ConceptMap urn:test:units maps unit 'MGDL' to a non-UCUM code "
        "(unit 'MG/DL' is not a UCUM unit)"]


def test_the_alternate_code_of_a_cwe_can_be_the_mapped_one() -> None:
    """OBX-3 with a local primary code unknown to the map and an alternate (CWE-4..6)
    the map knows."""
    from adapters.hl7v2.translate import translate_bytes

    install(SourceMaps([(None, {
        "resourceType": "ConceptMap", "url": "urn:test:alt",
        "useContext": source_context("LAB"),
        "group": [{"source": "urn:fhir-fusion:hl7v2:codesystem:99GLU", "target": LOINC,
                   "element": [{"code": "G1", "target": [{"code": "2345-7",
                                                          "equivalence": "equivalent"}]}]}]})]))
    raw = ("MSH|^~\\&|ANALYSER|LAB|||20240101120000||ORU^R01|A1|P|2.5.1\r"
           "PID|1||123^^^LAB^MR\r"
           "OBR|1||F1|GLU^Glucose^L\r"
           "OBX|1|NM|X9^Glucose fasting^L^G1^Glucose^99GLU||100|mg/dL|||||F\r").encode()
    bundle = translate_bytes(raw).bundle
    (obs,) = [e["resource"] for e in bundle["entry"]
              if e["resource"]["resourceType"] == "Observation"]
    assert [c["code"] for c in obs["code"]["coding"]] == ["X9", "G1", "2345-7"]


def test_a_loop_through_two_maps_of_one_source_is_broken() -> None:
    forward = {"resourceType": "ConceptMap", "url": "urn:test:one",
               "useContext": source_context("LAB1"),
               "group": [{"source": "urn:lab1", "target": "urn:lab1", "element": [
                   {"code": "NA", "target": [{"code": "SOD", "equivalence": "equivalent"}]}]}]}
    back = {"resourceType": "ConceptMap", "url": "urn:test:two",
            "useContext": source_context("LAB1"),
            "group": [{"source": "urn:lab1", "target": "urn:lab1", "element": [
                {"code": "SOD", "target": [{"code": "NA", "equivalence": "equivalent"}]}]}]}
    maps = SourceMaps([(None, forward), (None, back)])
    obs = {"resourceType": "Observation", "code": {"coding": [{"system": "urn:lab1",
                                                                "code": "NA"}]}}
    report = standardise_observation(obs, "LAB1", maps=maps)
    assert len(obs["code"]["coding"]) == 1
    assert [i.diagnostics for i in report.issues.values()] == [
        "ConceptMap urn:test:one maps 'NA' to 'SOD', which ConceptMap urn:test:two of the same "
        "source maps again (a chain or loop); maps are applied one step, so 'NA' is left "
        "unmapped"]
