"""The shipped content: the curated LOINC subset against the real LOINC codes of the
sample files, the FHIR R4 value sets, ICD-10-CM."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import httpx
import pytest

from terminology import content, ucum

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
LOINC = "http://loinc.org"


def _subset() -> list[dict[str, str]]:
    with content.LOINC_SUBSET.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _loinc_check_digit(number: str) -> int:
    """LOINC's mod 10 check digit (the Luhn scheme over the digits before the hyphen)."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return (10 - total % 10) % 10


def test_subset_codes_carry_correct_check_digits_and_ucum_units() -> None:
    rows = _subset()
    assert 150 <= len(rows) <= 300
    assert len({r["code"] for r in rows}) == len(rows)
    for row in rows:
        number, check = row["code"].split("-")
        assert _loinc_check_digit(number) == int(check), row["code"]
        if row["example_unit"]:
            assert ucum.is_valid(row["example_unit"]), row["example_unit"]
    assert sum(1 for r in rows if r["display_zh"]) >= 80


async def _validate(client: httpx.AsyncClient, code: str, display: str | None) -> dict:
    params = {"url": LOINC, "code": code, **({"display": display} if display else {})}
    r = await client.get("CodeSystem/$validate-code", params=params)
    assert r.status_code == 200, r.text
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
            for p in r.json()["parameter"]}  # fmt: skip


@pytest.mark.anyio
async def test_synthea_observation_codes_and_descriptions(client: httpx.AsyncClient) -> None:
    with (SAMPLES / "csv" / "synthea_observations_excerpt.csv").open(newline="") as f:
        pairs = {(row["CODE"], row["DESCRIPTION"]) for row in csv.DictReader(f)}
    assert len(pairs) >= 20
    for code, description in sorted(pairs):
        out = await _validate(client, code, description)
        assert out["result"] is True, (code, out.get("message"))


@pytest.mark.anyio
async def test_lri_cbc_message_codes_and_names(client: httpx.AsyncClient) -> None:
    # the HL7 LRI CBC example message: every OBX is LOINC-coded with its long name
    text = (SAMPLES / "hl7v2" / "fhirconverter_LRI_2.0-NG_CBC_Typ_Message.hl7").read_text()
    coded = set(re.findall(r"\|(\d{1,5}-\d)\^([^^|]+)\^LN\b", text))
    assert len(coded) >= 25
    for code, name in sorted(coded):
        out = await _validate(client, code, name if code != "57021-8" else None)
        assert out["result"] is True, (code, out.get("message"))
    out = await _validate(client, "718-7", "Hemoglobin [Moles/volume] in Blood")
    assert out["result"] is False and out["display"] == "Hemoglobin [Mass/volume] in Blood"


@pytest.mark.anyio
async def test_chinese_type_ahead_on_loinc(client: httpx.AsyncClient) -> None:
    r = await client.get("ValueSet/$expand",
                         params={"url": "http://loinc.org/vs", "filter": "血糖",
                                 "displayLanguage": "zh-CN"})  # fmt: skip
    contains = r.json()["expansion"]["contains"]
    codes = {c["code"] for c in contains}
    assert {"2339-0", "15074-8", "41653-7", "1558-6"} <= codes
    assert all("血糖" in c["display"] for c in contains)


@pytest.mark.anyio
async def test_fhir_r4_value_sets_are_shipped(client: httpx.AsyncClient) -> None:
    r = await client.get("ValueSet/$expand",
                         params={"url": "http://hl7.org/fhir/ValueSet/administrative-gender"})
    assert r.status_code == 200, r.text
    codes = {c["code"] for c in r.json()["expansion"]["contains"]}
    assert codes == {"male", "female", "other", "unknown"}
    r = await client.get("ValueSet/$validate-code", params={
        "url": "http://hl7.org/fhir/ValueSet/observation-category",
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "vital-signs", "display": "Vital Signs"})  # fmt: skip
    assert r.json()["parameter"][0] == {"name": "result", "valueBoolean": True}
    r = await client.get("CodeSystem/$lookup", params={
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"})
    assert r.status_code == 200
    names = {p["name"]: p for p in r.json()["parameter"]}
    assert names["display"]["valueString"] == "ambulatory"


@pytest.mark.anyio
async def test_icd10cm_hierarchy(client: httpx.AsyncClient) -> None:
    system = content.ICD10CM
    r = await client.get("CodeSystem/$lookup", params={"system": system, "code": "E11.9"})
    assert r.status_code == 200, r.text
    params = r.json()["parameter"]
    assert {"name": "display",
            "valueString": "Type 2 diabetes mellitus without complications"} in params
    parents = [p["part"][1]["valueCode"] for p in params
               if p["name"] == "property" and p["part"][0]["valueCode"] == "parent"]
    assert parents == ["E11"]
    r = await client.get("CodeSystem/$subsumes",
                         params={"system": system, "codeA": "E08-E13", "codeB": "E11.9"})
    assert r.json()["parameter"] == [{"name": "outcome", "valueCode": "subsumes"}]
    r = await client.get("CodeSystem/$validate-code", params={"url": system, "code": "I10"})
    out = {p["name"]: p for p in r.json()["parameter"]}
    assert out["display"]["valueString"] == "Essential (primary) hypertension"
    r = await client.get("CodeSystem/$validate-code", params={"url": system, "code": "E11.99"})
    assert r.json()["parameter"][0] == {"name": "result", "valueBoolean": False}
