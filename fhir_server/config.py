"""Server settings: command line first, then FHIR_FUSION_* environment variables, then
defaults.

Each setting is declared once in SETTINGS with its environment variable, its parser
and its default, so the CLI, the environment and the README stay in step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "FHIR_FUSION_"
DATABASE_FILE = "fhir-fusion.sqlite3"
LOG_LEVELS = ("debug", "info", "warning", "error")
SYNCHRONOUS_MODES = ("normal", "full")


class ConfigError(ValueError):
    """A setting has a value the server cannot use; the message names the setting."""


@dataclass(frozen=True)
class ServeConfig:
    host: str
    port: int
    mllp_port: int  # 0 turns the MLLP listener off
    data_dir: Path
    demo: bool
    demo_count: int
    log_level: str
    sqlite_synchronous: str
    mllp_idle_timeout: float = 300.0  # seconds; a silent MLLP connection is closed
    # an Elasticsearch URL (fhir_server.search_index); None: only the SQLite FTS5 index
    search_index: str | None = None
    dicom_port: int = 11112  # 0 turns the DICOM listener off
    dicom_ae: str = "FHIRFUSION"
    dicom_allowed_aes: tuple[str, ...] = ()  # calling AE titles taken; empty: any
    store: str | None = None  # a MongoDB URL; None keeps the SQLite file in data_dir
    base_url: str | None = None  # the public FHIR base; None: as each request addresses it
    max_input_resources: int = 2000  # resources (and HL7 segments) one input may make

    @property
    def database_path(self) -> Path:
        return database_path(self.data_dir)

    @property
    def mllp_enabled(self) -> bool:
        return self.mllp_port != 0


def database_path(data_dir: Path) -> Path:
    return data_dir / DATABASE_FILE


def _search_index(text: str) -> str | None:
    from fhir_server.search_index import parse_setting  # imports the Elasticsearch client

    return parse_setting(text)


MONGODB_SCHEMES = ("mongodb://", "mongodb+srv://")


def is_mongodb_url(text: str) -> bool:
    return text.strip().lower().startswith(MONGODB_SCHEMES)


def _store(text: str) -> str | None:
    """A MongoDB URL (mongodb://host:port/database?replicaSet=rs0), or empty for the
    embedded SQLite store in the data folder."""
    text = text.strip()
    if not text or text.lower() == "sqlite":
        return None
    if not is_mongodb_url(text):
        raise ValueError(
            f"{text!r} is not a MongoDB URL (mongodb://host:port/database); leave it empty "
            "for the SQLite file in the data folder"
        )
    return text


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _port(text: str) -> int:
    port = _integer(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"{port} is outside 0-65535")
    return port


def _count(text: str) -> int:
    count = _integer(text)
    if count < 0:
        raise ValueError(f"{count} is negative")
    return count


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{text!r} is not a positive number of seconds")
    return seconds


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{text!r} is not one of 1/0, true/false, yes/no, on/off")


def _log_level(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return lowered


def _synchronous(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in SYNCHRONOUS_MODES:
        raise ValueError(f"{text!r} is not one of {', '.join(SYNCHRONOUS_MODES)}")
    return lowered


def _ae_title(text: str) -> str:
    """A DICOM AE title (PS3.5 VR AE): 1-16 characters, no backslash or control
    characters, not only spaces."""
    cleaned = text.strip()
    if not cleaned or len(cleaned) > 16 or "\\" in cleaned or any(ord(c) < 32 for c in cleaned):
        raise ValueError(f"{text!r} is not a DICOM AE title (1-16 characters, no backslash)")
    return cleaned


def _ae_titles(text: str) -> tuple[str, ...]:
    """Comma-separated AE titles; an empty text allows any caller, but a list of empty
    names (",,,": a templating slip) is refused rather than read as "allow everyone"."""
    if not text.strip():
        return ()
    titles = tuple(_ae_title(t) for t in text.split(",") if t.strip())
    if not titles:
        raise ValueError(f"{text!r} holds no AE title (leave it empty to allow any caller)")
    return titles


def _resource_cap(text: str) -> int:
    count = _integer(text)
    if count < 1:
        raise ValueError(f"{count} is not a positive number of resources")
    return count


def _base_url(text: str) -> str | None:
    """The FHIR base clients use (https://fhir.example.org/fhir): links, Location and
    the references the server treats as its own are built on it, not on the Host header."""
    from urllib.parse import urlsplit

    text = text.strip().rstrip("/")
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not an http(s) base URL such as https://host/fhir")
    return text


@dataclass(frozen=True)
class Setting:
    name: str  # ServeConfig field and argparse dest
    default: Any
    parse: Callable[[str], Any]
    help: str

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", str, "address the HTTP and MLLP listeners bind to"),
    Setting("port", 8080, _port, "HTTP port of the FHIR API"),
    Setting("mllp_port", 2575, _port, "MLLP port for HL7v2 feeds; 0 turns the listener off"),
    Setting("data_dir", Path("fhir-fusion-data"), Path, "folder holding the SQLite database"),
    Setting("demo", False, _flag, "send a generated HL7v2 demo feed to the MLLP listener"),
    Setting("demo_count", 40, _count, "how many demo messages to send"),
    Setting("log_level", "info", _log_level, "log level: " + ", ".join(LOG_LEVELS)),
    Setting(
        "sqlite_synchronous",
        "normal",
        _synchronous,
        "SQLite synchronous mode: normal keeps every acknowledged write when the process "
        "is killed; full also through a power cut, at an fsync per commit",
    ),
    Setting(
        "mllp_idle_timeout",
        300.0,
        _seconds,
        "seconds an MLLP connection may send nothing before it is closed",
    ),
    Setting(
        "search_index",
        None,
        _search_index,
        "an external search index kept through a durable outbox: elasticsearch://host:port "
        "(?prefix=, ?replicas=); empty for the SQLite store's own FTS5 index only",
    ),
    Setting("dicom_port", 11112, _port, "DICOM port (C-STORE, C-ECHO); 0 turns it off"),
    Setting("dicom_ae", "FHIRFUSION", _ae_title, "AE title of the DICOM listener"),
    Setting(
        "dicom_allowed_aes",
        (),
        _ae_titles,
        "calling AE titles the DICOM listener accepts, comma-separated; empty: any",
    ),
    Setting(
        "store",
        None,
        _store,
        "where resources are stored: a MongoDB URL (a replica set, for transactions), "
        "or empty for the SQLite file in the data folder",
    ),
    Setting(
        "base_url",
        None,
        _base_url,
        "public FHIR base URL (https://host/fhir) for links and Location, and the base "
        "whose references are local; empty: the URL each request was sent to",
    ),
    Setting(
        "max_input_resources",
        2000,
        _resource_cap,
        "the most resources one input (HL7v2 message, DICOM file, CSV chunk) may make, and "
        "the most segments / field repetitions of an HL7v2 message; more is refused (AE, "
        "413) and kept as rejected",
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}


def resolve_setting(name: str, given: Any, environ: Mapping[str, str] | None = None) -> Any:
    """The value from the command line (`given`, None when absent), else from the
    environment, else the default."""
    setting = _BY_NAME[name]
    if given is not None:
        return given
    environ = os.environ if environ is None else environ
    raw = environ.get(setting.env_var)
    if raw is None:
        return setting.default
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {setting.env_var}: {exc}") from None


def resolve_serve_config(
    given: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> ServeConfig:
    values = {s.name: resolve_setting(s.name, given.get(s.name), environ) for s in SETTINGS}
    config = ServeConfig(**values)
    ports = [("--port", config.port), ("--mllp-port", config.mllp_port),
             ("--dicom-port", config.dicom_port)]
    for n, (name, port) in enumerate(ports):
        for other, other_port in ports[n + 1:]:
            if port and port == other_port:
                raise ConfigError(f"{name} and {other} are both {port}; each listener needs "
                                  "a port of its own")
    if config.demo and not config.mllp_enabled:
        raise ConfigError(
            "--demo sends its feed through the MLLP listener, which --mllp-port 0 "
            f"(or {ENV_PREFIX}MLLP_PORT=0) turns off; give an MLLP port or drop --demo"
        )
    return config
