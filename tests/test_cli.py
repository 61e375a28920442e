"""The fhir-fusion command: option and environment precedence, offline ingest and the
dead-letter commands, each run as a real subprocess on a temporary data folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_server.cli import build_parser
from fhir_server.config import ConfigError, ServeConfig, resolve_serve_config

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


def test_environment_overrides_defaults() -> None:
    environ = {
        "FHIR_FUSION_HOST": "0.0.0.0",
        "FHIR_FUSION_PORT": "9090",
        "FHIR_FUSION_MLLP_PORT": "0",
        "FHIR_FUSION_DATA_DIR": "/srv/fhir",
        "FHIR_FUSION_LOG_LEVEL": "WARNING",
    }
    config = _serve_config([], environ)
    assert (config.host, config.port, config.mllp_port) == ("0.0.0.0", 9090, 0)
    assert config.mllp_enabled is False
    assert config.data_dir == Path("/srv/fhir")
    assert config.log_level == "warning"


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
