"""What CSV ingest tells the operator (break-feeds F11): a row whose conditional create
found its resource already there is "unchanged", not "stored"; an unclosed quote is named."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.csv.ingest import ingest_csv
from adapters.pipeline import Pipeline
from fhir_server.cli import main
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

CTX = Context(caller="csv-test")
HEADER = "Id,BIRTHDATE,FIRST,LAST,GENDER\n"


def run(tmp_path: Path, *files: tuple[bytes, str | None]) -> list[str]:
    async def main() -> list[str]:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        try:
            pipeline = Pipeline(store)
            return [str(await ingest_csv(pipeline, CTX, data, "patients", encoding=encoding))
                    for data, encoding in files]
        finally:
            await store.close()

    return asyncio.run(main())


def test_known_patients_in_another_file_are_unchanged_not_stored(tmp_path: Path) -> None:
    text = HEADER + "c1,1980-01-01,Zoë,Müller,F\nc2,1981-02-02,José,Núñez,M\n"
    other = HEADER + "c2,1981-02-02,José,Núñez,M\nc1,1980-01-01,Zoë,Müller,F\n"
    first, same, again = run(tmp_path, (text.encode("utf-8"), None),
                             (text.encode("latin-1"), "latin-1"),
                             (other.encode("latin-1"), "latin-1"))
    assert ": 2 stored, 0 duplicate, 0 rejected" in first
    assert ": 0 stored, 2 duplicate, 0 rejected" in same  # the same rows: found by hash
    # another file (not a duplicate input), the same patients: nothing was written
    assert ": 0 stored, 2 unchanged (already stored, not changed), 0 duplicate" in again


def test_a_second_row_for_the_same_patient_is_reported_unchanged(tmp_path: Path) -> None:
    text = HEADER + "C040,1980-01-01,Ann,Doe,F\nC040,1991-01-01,Ann,Doe,M\n"
    (summary,) = run(tmp_path, (text.encode(), None))
    assert ": 1 stored, 1 unchanged (already stored, not changed)" in summary


def test_an_unclosed_quote_is_named_in_the_reason(tmp_path: Path) -> None:
    text = HEADER + 'C020,"1980-01-01,Open,quote,F\nC021,1980-01-01,Good,Row,F\n'
    (summary,) = run(tmp_path, (text.encode(), None))
    assert ("line 2: has 2 fields, the header 5 (a quoted field runs from line 2 to line 3: "
            "an unclosed quote?)") in summary


@pytest.mark.parametrize(("path", "says"), [
    ("nonexistentElement", "'nonexistentElement' is not an element of Patient"),
    ("name[99999999].family", "list index 99999999 is past 99"),
    ("gender[0]", "Patient.gender does not repeat"),
])
def test_mapping_paths_are_checked_when_the_mapping_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, says: str) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "resource: Patient\nidentity: {system: 'urn:x', columns: [Id], write: create}\n"
        f"columns:\n  - {{column: LAST, path: '{path}'}}\n", encoding="utf-8")
    data = tmp_path / "p.csv"
    data.write_text(HEADER + "c1,1980-01-01,Ann,Doe,F\n", encoding="utf-8")
    for dry in ([], ["--dry-run"]):
        assert main(["ingest", "csv", str(data), "--mapping", str(mapping), *dry,
                     "--data-dir", str(tmp_path / "d")]) == 1
        assert says in capsys.readouterr().out  # "not loaded: <reason>", exit status 1


def test_a_gender_code_the_mapping_does_not_know_is_refused_not_made_unknown(
        tmp_path: Path) -> None:
    text = HEADER + "g1,1980-01-01,Ann,Doe,Zeldaleakgender\ng2,1980-01-01,Bo,Doe,U\n"
    (summary,) = run(tmp_path, (text.encode(), None))
    assert ": 1 stored, 0 duplicate, 1 rejected" in summary
    rejected = summary.splitlines()[1]
    assert rejected.startswith("  rejected: line 2:")
    assert "administrative-gender at Bundle.entry[0].resource.gender" in rejected
