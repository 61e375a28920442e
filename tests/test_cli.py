"""The fhir-fusion command: option and environment precedence, offline ingest and the
dead-letter commands, each run as a real subprocess on a temporary data folder."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_server import demo
from fhir_server.cli import build_parser
from fhir_server.config import (
    ConfigError,
    ServeConfig,
    database_path,
    resolve_serve_config,
)
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "hl7v2"


def _serve_config(argv: list[str], environ: dict[str, str]) -> ServeConfig:
    args = build_parser().parse_args(["serve", *argv])
    return resolve_serve_config(vars(args), environ)


def test_defaults_when_neither_options_nor_environment_are_given() -> None:
    config = _serve_config([], {})
    assert (config.host, config.port, config.mllp_port) == ("127.0.0.1", 8080, 2575)
    assert config.data_dir == Path("fhir-fusion-data")
    assert config.database_path == Path("fhir-fusion-data") / "fhir-fusion.sqlite3"
    assert config.demo is False
    assert config.log_level == "info"
    assert config.sqlite_synchronous == "normal"


def test_mllp_idle_timeout_from_option_environment_or_default() -> None:
    assert _serve_config([], {}).mllp_idle_timeout == 300.0
    env = {"FHIR_FUSION_MLLP_IDLE_TIMEOUT": "45"}
    assert _serve_config([], env).mllp_idle_timeout == 45.0
    assert _serve_config(["--mllp-idle-timeout", "2.5"], env).mllp_idle_timeout == 2.5
    with pytest.raises(ConfigError, match="FHIR_FUSION_MLLP_IDLE_TIMEOUT"):
        _serve_config([], {"FHIR_FUSION_MLLP_IDLE_TIMEOUT": "0"})


def test_environment_overrides_defaults() -> None:
    environ = {
        "FHIR_FUSION_HOST": "0.0.0.0",
        "FHIR_FUSION_PORT": "9090",
        "FHIR_FUSION_MLLP_PORT": "0",
        "FHIR_FUSION_DATA_DIR": "/srv/fhir",
        "FHIR_FUSION_LOG_LEVEL": "WARNING",
        "FHIR_FUSION_SQLITE_SYNCHRONOUS": "FULL",
    }
    config = _serve_config([], environ)
    assert (config.host, config.port, config.mllp_port) == ("0.0.0.0", 9090, 0)
    assert config.mllp_enabled is False
    assert config.data_dir == Path("/srv/fhir")
    assert config.log_level == "warning"
    assert config.sqlite_synchronous == "full"


def test_command_line_wins_over_environment() -> None:
    environ = {"FHIR_FUSION_PORT": "9090", "FHIR_FUSION_DEMO": "yes", "FHIR_FUSION_HOST": "::1"}
    config = _serve_config(["--port", "8181", "--no-demo", "--data-dir", "d"], environ)
    assert config.port == 8181
    assert config.demo is False
    assert config.host == "::1"  # not given on the command line, so the environment's
    assert config.data_dir == Path("d")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        pytest.param("FHIR_FUSION_PORT", "eighty", "'eighty' is not a whole number", id="port"),
        pytest.param("FHIR_FUSION_MLLP_PORT", "70000", "70000 is outside 0-65535", id="range"),
        pytest.param("FHIR_FUSION_DEMO", "maybe", "'maybe' is not one of", id="flag"),
        pytest.param("FHIR_FUSION_LOG_LEVEL", "loud", "'loud' is not one of", id="level"),
        pytest.param("FHIR_FUSION_SQLITE_SYNCHRONOUS", "off", "'off' is not one of", id="sync"),
    ],
)
def test_bad_environment_values_are_refused_naming_the_variable(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"environment variable {variable}: {message}"):
        _serve_config([], {variable: value})


def test_demo_without_mllp_listener_is_refused() -> None:
    with pytest.raises(ConfigError, match="--demo sends its feed through the MLLP listener"):
        _serve_config(["--demo", "--mllp-port", "0"], {})


def test_bad_port_option_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve", "--port", "99999"])
    assert exit_info.value.code == 2
    assert "argument --port: 99999 is outside 0-65535" in capsys.readouterr().err


def test_console_script_is_installed_and_runs() -> None:
    """The README's install puts `fhir-fusion` beside the interpreter."""
    script = Path(sys.executable).parent / "fhir-fusion"
    done = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fhir-fusion 0.1.0"


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_server.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def test_demo_messages_command_writes_the_generated_feed(tmp_path: Path) -> None:
    out = tmp_path / "feed.hl7"
    done = _cli("demo-messages", "--count", "6", "--seed", "11", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote 6 HL7v2 messages to {out}"
    assert out.read_bytes().count(b"MSH|^~\\&|") == 6


def _counts(summary_line: str) -> tuple[int, int, int]:
    match = re.search(r"(\d+) stored, (\d+) duplicate, (\d+) rejected", summary_line)
    assert match, summary_line
    stored, duplicate, rejected = (int(g) for g in match.groups())
    return stored, duplicate, rejected


INGESTED = [
    SAMPLES / "fhirconverter_ADT04-251.hl7",  # ADT^A04 v2.3: stored
    SAMPLES / "fhirconverter_LAB-ORU-1.hl7",  # ORU^R01 v2.5 with a UTF-8 BOM: stored
    SAMPLES / "hapi_omd_o03.hl7",  # OMD^O03 diet order: not a supported message type
]


def test_ingest_counts_stored_duplicate_and_rejected_messages(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = _cli("ingest", "hl7v2", *map(str, INGESTED), "--data-dir", str(data))
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("3 files, 3 messages: ")
    assert _counts(lines[0]) == (2, 0, 1)
    rejection = next(line for line in lines if "rejected: " in line and "hapi_omd" in line)
    assert "OMD" in rejection
    # the reason names the problem, not the patient (PID-5 of that sample is DUMAS^VICTOR HUGO)
    assert "DUMAS" not in first.stdout + first.stderr
    assert (data / "fhir-fusion.sqlite3").is_file()

    again = _cli("ingest", "hl7v2", str(INGESTED[0]), "--data-dir", str(data))
    assert again.returncode == 0, again.stderr
    assert _counts(again.stdout.splitlines()[0]) == (0, 1, 0)


def test_ingest_accepts_a_file_of_mllp_framed_messages(tmp_path: Path) -> None:
    """A capture of an MLLP feed: each message as 0x0B <message> 0x1C 0x0D (HL7 MLLP
    release 2), back to back."""
    framed = tmp_path / "capture.hl7"
    framed.write_bytes(b"".join(b"\x0b" + p.read_bytes() + b"\x1c\r" for p in INGESTED[:2]))
    done = _cli("ingest", "hl7v2", str(framed), "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("1 files, 2 messages: ")
    assert _counts(done.stdout) == (2, 0, 0)
    assert "does not start with" not in done.stdout


def test_ingest_reads_the_data_dir_from_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "from-env"
    done = _cli("ingest", "hl7v2", str(INGESTED[0]), env={"FHIR_FUSION_DATA_DIR": str(data)})
    assert done.returncode == 0, done.stderr
    assert _counts(done.stdout) == (1, 0, 0)
    assert (data / "fhir-fusion.sqlite3").is_file()


def test_ingest_exits_1_when_a_file_cannot_be_read(tmp_path: Path) -> None:
    missing = tmp_path / "missing.hl7"
    done = _cli("ingest", "hl7v2", str(INGESTED[0]), str(missing), "--data-dir", str(tmp_path))
    assert done.returncode == 1
    assert _counts(done.stdout) == (1, 0, 0)
    assert f"unreadable: {missing}" in done.stdout


def test_deadletter_list_show_and_retry_a_rejected_sample(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert _cli("ingest", "hl7v2", *map(str, INGESTED), "--data-dir", data).returncode == 0
    listing = _cli("deadletter", "list", "--data-dir", data)
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header == "id\tfeed\treceived\treason"
    assert len(rows) == 1
    input_id, feed, received, reason = rows[0].split("\t")
    assert feed == "hl7v2"
    assert received.startswith("20")
    assert "OMD" in reason
    assert "DUMAS" not in listing.stdout

    shown = _cli("deadletter", "show", input_id, "--data-dir", data)
    assert shown.returncode == 0, shown.stderr
    assert f"id: {input_id}\nfeed: hl7v2\n" in shown.stdout
    assert f"reason: {reason}" in shown.stdout
    # the raw message, on explicit request, segment per line
    assert "MSH|^~\\&|DIETOOLS|1^DOMINION|JARA||20101027181706||OMD^O03^OMD_O03" in shown.stdout
    assert "\nODS|P||CARACTERISTICA^DIABETICO|" in shown.stdout

    retried = _cli("deadletter", "retry", input_id, "--data-dir", data)
    assert retried.returncode == 1  # still not a supported message type
    assert f"input {input_id} (hl7v2): rejected" in retried.stdout
    after = _cli("deadletter", "list", "--data-dir", data).stdout.splitlines()
    assert [row.split("\t")[0] for row in after[1:]] == [input_id]  # kept once, not twice


def test_deadletter_on_a_missing_data_folder_says_so_and_creates_nothing(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nonexistent-dir"
    for action in (["list"], ["show", "1"], ["retry", "1"]):
        done = _cli("deadletter", *action, "--data-dir", str(missing))
        assert done.returncode == 1, action
        assert done.stderr.strip() == (
            f"fhir-fusion: no data folder at {missing} (nothing has been stored there)"
        )
        assert not missing.exists()
    # a folder without a database: the database is named, and still not created
    done = _cli("deadletter", "list", "--data-dir", str(tmp_path))
    assert done.returncode == 1
    assert str(database_path(tmp_path)) in done.stderr
    assert not database_path(tmp_path).exists()


def test_deadletter_list_on_an_empty_store(tmp_path: Path) -> None:
    asyncio.run(_create_store(tmp_path))
    empty = _cli("deadletter", "list", "--data-dir", str(tmp_path))
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == "no rejected inputs"


async def _create_store(data: Path) -> None:
    store = await SQLiteStore.open(database_path(data))
    await store.close()


def test_deadletter_unknown_id_is_a_clear_error(tmp_path: Path) -> None:
    asyncio.run(_create_store(tmp_path))
    for action in ("show", "retry"):
        done = _cli("deadletter", action, "4711", "--data-dir", str(tmp_path))
        assert done.returncode == 1
        assert done.stderr.strip() == "fhir-fusion: no input with id 4711"


def test_deadletter_retry_stores_an_input_that_failed_for_a_passing_reason(
    tmp_path: Path,
) -> None:
    """An input kept as rejected for a reason that has gone away (here: recorded as a
    transient failure) is stored by `retry`, under the same input id."""
    data = tmp_path / "data"
    message = demo.demo_messages(1)[0]

    async def keep_rejected() -> int:
        store = await SQLiteStore.open(database_path(data))
        try:
            async with store.transaction(Context()) as txn:
                return await txn.record_input(
                    "hl7v2", message.payload, "rejected", reason="simulated outage"
                )
        finally:
            await store.close()

    input_id = str(asyncio.run(keep_rejected()))
    retried = _cli("deadletter", "retry", input_id, "--data-dir", str(data))
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"input {input_id} (hl7v2): stored")
    assert _cli("deadletter", "list", "--data-dir", str(data)).stdout.strip() == (
        "no rejected inputs"
    )
    again = _cli("deadletter", "retry", input_id, "--data-dir", str(data))
    assert again.returncode == 0
    assert again.stdout.startswith(f"input {input_id} (hl7v2): duplicate")
