"""A number no measurement has (400 digits, 1e400) rejects its row with the line, and the
rest of the file is stored (break-feeds F22, CSV part): through the CLI and $ingest on a
real socket, into a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from live_server import live_server

from adapters.csv.values import parse_decimal
from fhir_server.cli import main

HEADER = "DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE\n"
PATIENTS = b"Id,BIRTHDATE,FIRST,LAST,GENDER\np1,1980-01-01,A,B,F\n"


def labs(*values: str) -> bytes:
    return (HEADER + "".join(f"2020-02-06,p1,e{i},laboratory,2345-7,Glucose,{v},mg/dL,numeric\n"
                             for i, v in enumerate(values))).encode()


def test_numbers_beyond_a_fhir_decimal_are_refused_naming_the_problem() -> None:
    assert str(parse_decimal("1.50")) == "1.50"
    assert str(parse_decimal("123456789012345678")) == "123456789012345678"  # 18 digits
    for text, problem in (("9" * 400, "more than 18 digits"), ("1e400", "out of range"),
                          ("0." + "0" * 400 + "1", "out of range"),
                          ("-" + "9" * 19, "more than 18 digits")):
        with pytest.raises(ValueError, match=problem):
            parse_decimal(text)


def test_the_cli_rejects_the_row_and_loads_the_rest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.csv").write_bytes(PATIENTS)
    (tmp_path / "labs.csv").write_bytes(labs("100", "9" * 400, "120"))
    base = ["--data-dir", str(tmp_path)]
    assert main(["ingest", "csv", str(tmp_path / "p.csv"), "--mapping", "patients", *base]) == 0
    assert main(["ingest", "csv", str(tmp_path / "labs.csv"), "--mapping", "lab-results",
                 *base]) == 0
    out = capsys.readouterr().out
    assert "3 rows (utf-8, delimiter ',', mapping lab-results): 2 stored" in out
    assert "line 3: column VALUE has more than 18 digits" in out
    assert "9" * 30 not in out


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with live_server(tmp_path) as (url, _store):
        async with httpx.AsyncClient(base_url=f"{url}/fhir/", timeout=60) as http:
            yield http


@pytest.mark.anyio
async def test_ingest_answers_422_for_the_row_not_500(client: httpx.AsyncClient) -> None:
    csv = {"Content-Type": "text/csv"}
    assert (await client.post("$ingest?mapping=patients", content=PATIENTS,
                              headers=csv)).status_code == 200
    answer = await client.post("$ingest?mapping=lab-results",
                               content=labs("100", "9" * 400, "1e400", "120"), headers=csv)
    assert answer.status_code == 200, answer.text
    statuses = [e["response"]["status"].split()[0] for e in answer.json()["entry"]]
    assert statuses == ["201", "422", "422", "201"]
    found = (await client.get("Observation", params={"code": "2345-7"})).json()
    assert sorted(str(e["resource"]["valueQuantity"]["value"]) for e in found["entry"]) == [
        "100", "120"]
