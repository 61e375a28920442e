"""`fhir-fusion ingest csv`: a dry run shows the first resources and stores nothing; a
load stores the rows, a second load of the same file stores nothing new; the dead-letter
commands see the rejected rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.cli import main

CSV = Path(__file__).resolve().parents[2] / "shared" / "samples" / "csv"


def test_dry_run_shows_resources_and_stores_nothing(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["ingest", "csv", str(CSV / "synthea_observations_excerpt.csv"),
                   "--mapping", "vital-signs", "--dry-run", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    assert "the first 3 rows the mapping takes" in out
    assert out.count('"resourceType": "Observation"') == 3
    assert '"code": "8302-2"' in out and '"value": 51.1' in out  # line 2: Body Height
    assert not any(tmp_path.iterdir())  # no database made


def test_load_twice_then_deadletter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "labs.csv"
    data.write_text("Id;BIRTHDATE;LAST;GENDER\r\nx-1;01.02.1970;Schmidt;F\r\n"
                    "x-2;1970-02-30;Meier;M\r\n", encoding="utf-8-sig")
    args = ["ingest", "csv", str(data), "--mapping", "patients", "--data-dir", str(tmp_path)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "2 rows (utf-8-sig, delimiter ';', mapping patients): 1 stored, 0 duplicate, " \
           "1 rejected" in first
    assert "line 3: column BIRTHDATE is not a date" in first
    assert main(args) == 0
    assert "0 stored, 1 duplicate, 1 rejected" in capsys.readouterr().out
    assert main(["deadletter", "list", "--data-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert listing.count("\tcsv\t") == 1 and "line 3: column BIRTHDATE" in listing


def test_mapping_is_required_and_errors_name_the_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(CSV / "aktin_patients.csv")
    assert main(["ingest", "csv", path, "--data-dir", str(tmp_path)]) == 1
    assert "needs --mapping" in capsys.readouterr().err
    assert main(["ingest", "csv", path, "--mapping", "patients", "--data-dir",
                 str(tmp_path)]) == 1
    assert "lacks the column(s) BIRTHDATE, GENDER, Id, LAST" in capsys.readouterr().out


def test_deadletter_list_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`fhir-fusion deadletter list | head -1`: the listing is longer than the pipe holds,
    head stops reading; no BrokenPipeError traceback."""
    import asyncio
    import subprocess

    from adapters.pipeline import Pipeline
    from fhir_server.storage.base import Context
    from fhir_server.storage.sqlite import SQLiteStore

    async def fill() -> None:
        store = await SQLiteStore.open(tmp_path / "fhir-fusion.sqlite3")
        try:
            pipeline = Pipeline(store)
            for n in range(1200):  # ~100 bytes a line: past the 64 KiB of a pipe
                await pipeline.keep_rejected(Context(), "hl7v2", b"MSH|%d" % n,
                                             "a reason long enough to fill the pipe " * 2)
        finally:
            await store.close()

    asyncio.run(fill())
    import shlex
    import sys

    run = "import sys; from fhir_server.cli import main; sys.exit(main())"
    command = (f"{shlex.quote(sys.executable)} -c {shlex.quote(run)} deadletter list "
               f"--limit 2000 --data-dir {shlex.quote(str(tmp_path))} | head -1")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True,
                          text=True, timeout=120)
    assert done.stdout == "id\tfeed\treceived\treason\n"
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
