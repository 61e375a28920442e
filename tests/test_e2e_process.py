"""End to end against real `fhir-fusion serve` processes on 127.0.0.1.

Each test starts the server as a subprocess on ephemeral ports with its own data
folder, talks to it over real sockets (HTTP through httpx and fhirpy, HL7v2 over MLLP)
and always ends the process. The durability test kills the server with SIGKILL while
writes are in flight and checks that every acknowledged write survived the restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirpy import SyncFHIRClient

from fhir_server import demo

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One `fhir-fusion serve` subprocess; output goes to files so pipes never block it."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.port = free_port()
        self.mllp_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    @property
    def stdout_path(self) -> Path:
        return self.data_dir.parent / f"serve-{self.runs}.out"

    @property
    def stderr_path(self) -> Path:
        return self.data_dir.parent / f"serve-{self.runs}.err"

    def start(self) -> None:
        self.runs += 1
        argv = [
            sys.executable, "-m", "fhir_server.cli", "serve",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--mllp-port", str(self.mllp_port),
            "--dicom-port", "0",
            "--data-dir", str(self.data_dir),
            *self.extra,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_FUSION_")}
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO, env=env)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.base}/metadata", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"server not ready after {START_TIMEOUT}s:\n{self.output()}")

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )

    def wait_for_output(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.stdout_path.read_text(errors="replace")
            if text in out:
                return out
            time.sleep(0.1)
        pytest.fail(f"{text!r} not printed within {timeout}s:\n{self.output()}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)

    def signal_and_wait(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data")
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


def _send(proc: ServerProcess, messages: list[demo.DemoMessage]) -> demo.FeedSummary:
    payloads = [m.payload for m in messages]
    coroutine = demo.send_messages("127.0.0.1", proc.mllp_port, payloads, timeout=30)
    return asyncio.run(asyncio.wait_for(coroutine, 120))


def _search(proc: ServerProcess, resource_type: str, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{proc.base}/{resource_type}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") == "match"
    ]


def test_banner_prints_the_urls_to_try(server: ServerProcess) -> None:
    out = server.wait_for_output("Press Ctrl+C to stop.")
    assert f"FHIR base       {server.base}" in out
    assert f"capabilities    {server.base}/metadata" in out
    assert f"MLLP (HL7v2)    127.0.0.1:{server.mllp_port}" in out
    # without --demo the store is empty: a search hint would find nothing
    assert "Patient?family=" not in out


def test_fhirpy_client_creates_reads_updates_searches_and_reads_history(
    server: ServerProcess,
) -> None:
    client = SyncFHIRClient(server.base)
    patient = client.resource(
        "Patient",
        name=[{"family": "Quintero-Abbott", "given": ["Lena"]}],
        gender="female",
        birthDate="1984-03-02",
    )
    patient.save()
    assert patient.id
    assert patient["meta"]["versionId"] == "1"

    read = client.reference("Patient", patient.id).to_resource()
    assert read["name"][0]["family"] == "Quintero-Abbott"
    assert read["birthDate"] == "1984-03-02"

    read["birthDate"] = "1984-03-12"
    read.save()
    assert read["meta"]["versionId"] == "2"
    again = client.reference("Patient", patient.id).to_resource()
    assert again["birthDate"] == "1984-03-12"

    found = client.resources("Patient").search(family="quintero").fetch_all()
    assert [p.id for p in found] == [patient.id]
    assert client.resources("Patient").search(family="Nobody-Here").fetch_all() == []

    history = client.execute(f"Patient/{patient.id}/_history", method="get")
    assert history["type"] == "history"
    versions = [e["resource"]["meta"]["versionId"] for e in history["entry"]]
    assert versions == ["2", "1"]
    assert [e["resource"]["birthDate"] for e in history["entry"]] == ["1984-03-12", "1984-03-02"]


def test_mllp_messages_are_acknowledged_and_their_patients_found(server: ServerProcess) -> None:
    messages = demo.demo_messages(16)  # four patients: Fairbanks, Müller, Núñez, 陈
    summary = _send(server, messages)
    assert summary.ack_codes == {"AA": 16}, summary

    for family in ("Fairbanks", "Müller", "Núñez", "陈"):
        mrn = next(m.patient.mrn for m in messages if m.patient.family == family)
        patients = _search(server, "Patient", family=family)
        assert len(patients) == 1, (family, patients)
        values = {i["value"] for i in patients[0].get("identifier", [])}
        assert mrn in values
        assert patients[0]["name"][0]["family"] == family

    fairbanks = _search(server, "Patient", family="Fairbanks")[0]
    observations = _search(server, "Observation", subject=f"Patient/{fairbanks['id']}")
    codes = {c["code"] for o in observations for c in o["code"]["coding"]}
    assert {"2345-7", "2951-2", "2823-3", "2160-0", "718-7"} <= codes
    glucose = next(o for o in observations if o["code"]["coding"][0]["code"] == "2345-7")
    assert glucose["valueQuantity"]["unit"] == "mg/dL"
    assert glucose["valueQuantity"]["system"] == "http://unitsofmeasure.org"


def test_server_logs_carry_no_patient_data(server: ServerProcess) -> None:
    messages = demo.demo_messages(8)
    good = _send(server, messages)
    assert good.ack_codes == {"AA": 8}
    patient = messages[0].patient
    bad_date = messages[1].payload.replace(patient.birth_date.encode(), b"19481340")
    refused = _send(server, [demo.DemoMessage("bad", "ORU^R01", patient, (), bad_date)])
    assert refused.refused == 1, refused
    server.stop()

    log = server.stderr_path.read_text(encoding="utf-8")
    assert "rejected: PID-7" in log  # the rejection is logged, by field and reason
    for m in messages:
        for value in (m.patient.family, m.patient.given, m.patient.mrn, m.patient.birth_date):
            assert value not in log
    assert "19481340" not in log


def test_sigterm_and_sigint_stop_the_server_cleanly(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data")
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            proc.start()
            # an idle sender connection must not hold the shutdown up
            with socket.create_connection(("127.0.0.1", proc.mllp_port), timeout=10):
                started = time.monotonic()
                assert proc.signal_and_wait(sig) == 0, proc.output()
                assert time.monotonic() - started < 10
            assert "store closed" in proc.stderr_path.read_text()
    finally:
        proc.stop()


def test_demo_flag_feeds_the_listener_over_mllp(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", "--demo", "--demo-count", "8")
    try:
        proc.start()
        out = proc.wait_for_output("demo feed:")
        assert "8 HL7v2 messages sent over MLLP" in out
        assert "8 acknowledged (AA), 0 refused (AE/AR), 0 unanswered" in out
        assert len(_search(proc, "Patient", family="Müller")) == 1
        # the banner's search hint names a patient the demo feed stored
        assert f"{proc.base}/Patient?family=Fairbanks" in out
        assert len(_search(proc, "Patient", family="Fairbanks")) >= 1
    finally:
        proc.stop()


class _HttpWriter(threading.Thread):
    """Creates Patients one after another until the server goes away; keeps what was
    acknowledged (201 with an id)."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.acknowledged: dict[str, str] = {}  # id -> family
        self.stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            n = 0
            while not self.stop_event.is_set() and n < 5000:
                family = f"Durable{n:05d}"
                body = {"resourceType": "Patient", "name": [{"family": family}]}
                try:
                    response = http.post(f"{self.base}/Patient", json=body)
                except httpx.HTTPError:
                    return
                if response.status_code == 201:
                    self.acknowledged[response.json()["id"]] = family
                n += 1


class _MllpWriter(threading.Thread):
    """Sends demo messages one at a time; keeps those answered AA."""

    def __init__(self, port: int, messages: list[demo.DemoMessage]) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.messages = messages
        self.acknowledged: list[demo.DemoMessage] = []

    def run(self) -> None:
        for message in self.messages:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                    sock.sendall(b"\x0b" + message.payload + b"\x1c\x0d")
                    frame = b""
                    while not frame.endswith(b"\x1c\x0d"):
                        chunk = sock.recv(65536)
                        if not chunk:
                            return
                        frame += chunk
            except OSError:
                return
            if demo.ack_code(frame) == "AA":
                self.acknowledged.append(message)


def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data")
    try:
        proc.start()
        http_writer = _HttpWriter(proc.base)
        mllp_writer = _MllpWriter(proc.mllp_port, demo.demo_messages(400, seed=99))
        http_writer.start()
        mllp_writer.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            len(http_writer.acknowledged) < 30 or len(mllp_writer.acknowledged) < 12
        ):
            time.sleep(0.05)
        proc.kill9()  # while both writers are still sending
        http_writer.stop_event.set()
        http_writer.join(timeout=30)
        mllp_writer.join(timeout=30)
        assert len(http_writer.acknowledged) >= 30
        assert len(mllp_writer.acknowledged) >= 12

        proc.start()
        with httpx.Client(timeout=30) as http:
            for resource_id, family in http_writer.acknowledged.items():
                response = http.get(f"{proc.base}/Patient/{resource_id}")
                assert response.status_code == 200, (resource_id, response.text)
                assert response.json()["name"][0]["family"] == family

        patient_ids: dict[str, str] = {}
        for message in mllp_writer.acknowledged:
            mrn = message.patient.mrn
            if mrn not in patient_ids:
                found = _search(proc, "Patient", identifier=mrn)
                assert len(found) == 1, (message.control_id, found)
                patient_ids[mrn] = found[0]["id"]
            if message.loinc_codes:
                observations = _search(
                    proc, "Observation", subject=f"Patient/{patient_ids[mrn]}", _count="100"
                )
                codes = {c["code"] for o in observations for c in o["code"]["coding"]}
                assert set(message.loinc_codes) <= codes, message.control_id
    finally:
        proc.stop()


@pytest.mark.parametrize("busy", ["--port", "--mllp-port", "--dicom-port"])
def test_a_port_in_use_is_a_clear_start_failure(tmp_path: Path, busy: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--port": str(free_port()), "--mllp-port": str(free_port()),
                 "--dicom-port": str(free_port()), busy: str(port)}
        done = subprocess.run(
            [sys.executable, "-m", "fhir_server.cli", "serve", "--data-dir", str(tmp_path),
             *(item for pair in ports.items() for item in pair)],
            capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        )  # fmt: skip
    assert done.returncode != 0
    what = {"--port": "the HTTP server on", "--mllp-port": "cannot listen for MLLP on",
            "--dicom-port": "cannot listen for DICOM on"}[busy]
    assert f"fhir-fusion: {what} 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert "store closed" in done.stderr
