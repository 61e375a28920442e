"""Clinical data never changes patient silently (break-feeds F27, F28): over MLLP on a
real socket, with a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from adapters.hl7v2.message import parse
from adapters.hl7v2.mllp import frame, start_mllp_server
from adapters.pipeline import Pipeline
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore
from search.query import parse_search

HL7 = Path(__file__).resolve().parents[2] / "shared" / "samples" / "hl7v2"
CTX = Context(caller="identity-test")


class Ack:
    def __init__(self, data: bytes) -> None:
        msg = parse(data[data.index(b"\x0b") + 1:-2])
        msa, err = msg.first("MSA"), msg.first("ERR")
        assert msa is not None
        self.code, self.control_id = msa.get(1), msa.get(2)
        self.err_code = err.get(3) if err else ""
        self.err_where = f"{err.get(2, 1)}-{err.get(2, 3)}" if err else ""


async def send(port: int, *messages: bytes) -> list[Ack]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    acks = []
    for message in messages:
        writer.write(frame(message))
        await writer.drain()
        acks.append(Ack(await reader.readuntil(b"\x1c\x0d")))
    writer.close()
    await writer.wait_closed()
    return acks


async def search(store: SQLiteStore, rtype: str, *params: tuple[str, str]) -> list[Any]:
    page = await store.search(CTX, parse_search(rtype, list(params)))
    return [r.resource for r in page.resources if r.resource]


def run(db: Path, scenario: Callable[[SQLiteStore, int], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await SQLiteStore.open(db)
        server = await start_mllp_server(Pipeline(store), CTX, "127.0.0.1", 0)
        try:
            await scenario(store, server.sockets[0].getsockname()[1])
        finally:
            server.close()
            await server.wait_closed()
            await store.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def hl7(*segments: str) -> bytes:
    return "\r".join(segments).encode() + b"\r"


def oru(control: str, pid: str, value: str) -> bytes:
    return hl7(f"MSH|^~\\&|LAB|HOSP|R|RF|20240101||ORU^R01|{control}|P|2.5",
               f"PID|1||{pid}^^^H^MR||Pat^Ann||19800101|F", "PV1|1|O",
               "OBR|1|PLAC-1|FILL-777|2345-7^Glu^LN|||20240101",
               f"OBX|1|NM|2345-7^Glu^LN||{value}|mg/dL|||||F")


def test_an_oru_reusing_a_filler_number_for_another_patient_is_refused(tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        first, second = await send(port, oru("O1", "ORUP1", "100"), oru("O2", "ORUP2", "250"))
        assert (first.code, second.code) == ("AA", "AE")
        assert second.control_id == "O2"
        assert (second.err_code, second.err_where) == ("205", "OBR-3")
        (report,) = await search(store, "DiagnosticReport", ("identifier", "FILL-777"))
        (p1,) = await search(store, "Patient", ("identifier", "ORUP1"))
        assert report["subject"]["reference"] == f"Patient/{p1['id']}"
        assert report["meta"]["versionId"] == "1"
        (obs,) = await search(store, "Observation", ("subject", f"Patient/{p1['id']}"))
        assert str(obs["valueQuantity"]["value"]) == "100"
        assert not await search(store, "Patient", ("identifier", "ORUP2"))
        # kept as rejected with the reason (no patient data in it), and re-processable
        (kept,) = await store.list_inputs(CTX, status="rejected")
        assert kept.reason is not None and "OBR-3" in kept.reason
        assert "ORUP" not in kept.reason and "FILL-777" not in kept.reason
        retried = await Pipeline(store).retry(CTX, kept.id)
        assert retried.status == "rejected" and "OBR-3" in (retried.reason or "")
        # the same patient's corrected result still updates the report
        (third,) = await send(port, oru("O3", "ORUP1", "110"))
        assert third.code == "AA"
        (obs,) = await search(store, "Observation", ("subject", f"Patient/{p1['id']}"))
        assert str(obs["valueQuantity"]["value"]) == "110"

    run(tmp_path / "db.sqlite3", scenario)


def test_the_sample_oru_sent_again_for_another_patient_is_refused(tmp_path: Path) -> None:
    sample = (HL7 / "fhirconverter_LAB-ORU-1.hl7").read_bytes()
    other = sample.replace(b"|182|", b"|183|").replace(b"10006579^^^1^MR^1||DUCK^DONALD",
                                                         b"99999999^^^1^MR^1||GOOSE^GUS")
    assert other != sample

    async def scenario(store: SQLiteStore, port: int) -> None:
        acks = await send(port, sample, other)
        assert [(a.code, a.err_code, a.err_where) for a in acks] == [
            ("AA", "", ""), ("AE", "205", "OBR-3")]
        reports = await search(store, "DiagnosticReport", ("identifier", "82503246"))
        assert len(reports) == 1 and reports[0]["meta"]["versionId"] == "1"

    run(tmp_path / "db.sqlite3", scenario)


def adt(event: str, control: str, pid: str, visit: str = "VISIT-4242") -> bytes:
    return hl7(f"MSH|^~\\&|ADT|HOSP|R|RF|20240101||ADT^{event}|{control}|P|2.5",
               f"EVN|{event}|20240101", f"PID|1||{pid}||Pat^{control}||19800101|F",
               f"PV1|1|I|||||||||||||||||{visit}")


def test_an_admission_reusing_a_visit_number_for_another_patient_is_refused(
        tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        acks = await send(port, adt("A01", "E1", "ENCP1^^^H^MR"),
                          adt("A01", "E2", "ENCP2^^^H^MR"))
        assert [a.code for a in acks] == ["AA", "AE"]
        assert (acks[1].err_code, acks[1].err_where) == ("205", "PV1-19")
        (enc,) = await search(store, "Encounter", ("identifier", "VISIT-4242"))
        (p1,) = await search(store, "Patient", ("identifier", "ENCP1"))
        assert enc["subject"]["reference"] == f"Patient/{p1['id']}"
        assert not await search(store, "Patient", ("identifier", "ENCP2"))

    run(tmp_path / "db.sqlite3", scenario)


def test_an_update_naming_two_patients_record_numbers_is_refused(tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        acks = await send(port, adt("A01", "I1", "IDA^^^H^MR", "V1"),
                          adt("A01", "I2", "IDB^^^H2^MR", "V2"),
                          adt("A08", "I3", "IDA^^^H^MR~IDB^^^H2^MR", "V1"))
        assert [a.code for a in acks] == ["AA", "AA", "AE"]
        assert (acks[2].err_code, acks[2].err_where) == ("205", "PID-3")
        (a,) = await search(store, "Patient", ("identifier", "IDA"))
        (b,) = await search(store, "Patient", ("identifier", "IDB"))
        assert a["id"] != b["id"]
        assert a["meta"]["versionId"] == "1" and len(a["identifier"]) == 1
        # B's feed still works
        (later,) = await send(port, oru("I4", "IDB", "90").replace(b"^^^H^MR", b"^^^H2^MR"))
        assert later.code == "AA"

    run(tmp_path / "db.sqlite3", scenario)


def test_one_person_registered_at_two_facilities_with_one_ssn_is_taken(
        tmp_path: Path) -> None:
    # the SSN (CX-5 "SS") is not a match key: two records may share it (the samples do)
    async def scenario(store: SQLiteStore, port: int) -> None:
        acks = await send(port, adt("A01", "S1", "MRN1^^^H^MR~123456789^^^USSSA^SS", "V1"),
                          adt("A01", "S2", "MRN2^^^H2^MR~123456789^^^USSSA^SS", "V2"),
                          adt("A08", "S3", "MRN2^^^H2^MR~123456789^^^USSSA^SS", "V2"))
        assert [a.code for a in acks] == ["AA", "AA", "AA"]

    run(tmp_path / "db.sqlite3", scenario)
