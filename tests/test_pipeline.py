"""The ingest pipeline end to end on a real SQLite store: store, dedupe, reject, retry."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from adapters.ingest import ingest_files
from adapters.pipeline import IngestResult, Pipeline
from adapters.translation import Source, Translation
from fhir_server.storage.base import Context, StoredResource
from fhir_server.storage.sqlite import SQLiteStore

HL7 = Path(__file__).resolve().parents[2] / "shared" / "samples" / "hl7v2"
CTX = Context()
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


def sample(name: str) -> bytes:
    return (HL7 / name).read_bytes()


async def stored(store: SQLiteStore, result: IngestResult, rtype: str) -> list[StoredResource]:
    """The current versions of the resources of `rtype` a stored input wrote."""
    assert result.response is not None
    found = []
    for entry in result.response["entry"]:
        kind, rid = entry["response"]["location"].split("/")[:2]
        if kind == rtype:
            current = await store.read(CTX, kind, rid)
            assert current is not None
            found.append(current)
    return found


async def versions(store: SQLiteStore) -> int:
    return (await store.history(CTX, count=1))[1]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "db.sqlite3"


def test_oru_is_stored_with_provenance_and_its_raw_input(db: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            raw = sample("fhirconverter_LAB-ORU-1.hl7")
            result = await Pipeline(store).ingest(CTX, "hl7v2", raw)
            assert result.status == "stored"
            kept = await store.get_input(CTX, result.input_id or 0)
            assert kept is not None and kept.status == "stored" and kept.content == raw
            assert kept.result is not None
            assert kept.result["details"]["control_id"] == "182"
            assert {"type": "Observation", "method": "PUT",
                    "match": "Observation?identifier=urn%3Afhir-fusion%3Ahl7v2%3Aauthority%3A"
                             "SomeSystem|82503246-obx2"} in kept.result["resources"]

            observations = await stored(store, result, "Observation")
            assert len(observations) == 10
            values = {o.resource["code"]["coding"][0]["code"]: o.resource.get("valueQuantity", {})
                      for o in observations if o.resource}
            assert str(values["11273-0"]["value"]) == "4.06"
            (patient,) = await stored(store, result, "Patient")
            assert patient.resource and patient.resource["name"][0]["family"] == "DUCK"
            reports = await stored(store, result, "DiagnosticReport")
            assert all(r.resource and r.resource["subject"]["reference"] == f"Patient/{patient.id}"
                       for r in reports)

            (provenance,) = await stored(store, result, "Provenance")
            assert provenance.resource is not None
            targets = {t["reference"] for t in provenance.resource["target"]}
            assert f"Patient/{patient.id}" in targets
            assert {f"Observation/{o.id}" for o in observations} <= targets
            entities = [e["what"]["identifier"]["value"] for e in provenance.resource["entity"]]
            assert entities == ["182", kept.content_hash]
            assert provenance.resource["agent"][0]["who"]["display"] == "SomeSystem"
            assert provenance.resource["occurredDateTime"] == "2014-10-06T06:45:00+07:00"
        finally:
            await store.close()

    run(scenario())


def test_same_message_twice_is_a_duplicate_and_writes_nothing(db: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            pipeline = Pipeline(store)
            raw = sample("fhirconverter_ADT01-23.hl7")
            first = await pipeline.ingest(CTX, "hl7v2", raw)
            before = await versions(store)
            again = await pipeline.ingest(CTX, "hl7v2", raw)
            assert again.status == "duplicate"
            assert again.input_id == first.input_id
            assert again.result == first.result
            assert await versions(store) == before
            assert len(await store.list_inputs(CTX, feed="hl7v2")) == 1
        finally:
            await store.close()

    run(scenario())


def test_concurrent_identical_messages_store_once(db: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            pipeline = Pipeline(store)
            raw = sample("google_oru_r01_ex6.hl7")
            results = await asyncio.gather(*(pipeline.ingest(CTX, "hl7v2", raw) for _ in range(6)))
            assert sorted(r.status for r in results) == ["duplicate"] * 5 + ["stored"]
            assert pipeline._locks == {}  # no lock is left behind
        finally:
            await store.close()

    run(scenario())


def test_second_message_about_the_same_patient_adds_no_patient_version(db: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            pipeline = Pipeline(store)
            raw = sample("fhirconverter_ADT01-28.hl7")
            first = await pipeline.ingest(CTX, "hl7v2", raw)
            # an A08 update with a new control id and the same demographics
            update = raw.replace(b"ADT^A01^ADT_A01|MSG00001", b"ADT^A08^ADT_A01|MSG00002")
            second = await pipeline.ingest(CTX, "hl7v2", update)
            assert second.status == "stored"
            (p1,) = await stored(store, first, "Patient")
            (p2,) = await stored(store, second, "Patient")
            assert p1.id == p2.id
            assert p2.version == 1
            (practitioner,) = await stored(store, second, "Practitioner")
            assert practitioner.version == 1
        finally:
            await store.close()

    run(scenario())


def test_resent_results_under_a_new_control_id_write_only_header_and_provenance(
        db: Path) -> None:
    """The same ORU content with a new MSH-10 is new bytes (no dedupe by hash), but every
    resource is found again by its identifier and left unchanged."""

    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            pipeline = Pipeline(store)
            raw = sample("google_oru_r01_ex6.hl7")  # its authority "SIMULATOR MRN" has a space
            first = await pipeline.ingest(CTX, "hl7v2", raw)
            before = await versions(store)
            resent = raw.replace(b"|ORU^R01|7|", b"|ORU^R01|8|")
            second = await pipeline.ingest(CTX, "hl7v2", resent)
            assert second.status == "stored"
            assert first.response is not None and second.response is not None
            created = [e["response"]["location"].split("/")[0] for e in second.response["entry"]
                       if e["response"]["status"] == "201 Created"]
            assert created == ["MessageHeader", "Provenance"]
            assert await versions(store) == before + 2
            ids = [[e["response"]["location"].split("/")[1] for e in r.response["entry"]]
                   for r in (first, second)]
            assert ids[0][1:-1] == ids[1][1:-1]
        finally:
            await store.close()

    run(scenario())


def test_a40_merge_marks_the_old_patient_replaced(db: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            pipeline = Pipeline(store)
            merge = sample("fhirconverter_ADT-A40-01.hl7")
            # first the two patients are known through their own registrations
            old = merge.split(b"\nMRG")[0].replace(b"12345^^^BCBS^MR",
                                                     b"56789^^^BCBS^MR~777^^^OTHER^PI")
            old = old.replace(b"ADT^A40^ADT_A40|8919-40", b"ADT^A04^ADT_A01|8919-04")
            registered = await pipeline.ingest(CTX, "hl7v2", old)
            assert registered.status == "stored", registered.reason
            (before,) = await stored(store, registered, "Patient")

            result = await pipeline.ingest(CTX, "hl7v2", merge)
            assert result.status == "stored", result.reason
            survivor, replaced = await stored(store, result, "Patient")
            assert replaced.id == before.id and replaced.version == 2
            assert replaced.resource and replaced.resource["active"] is False
            assert replaced.resource["link"] == [
                {"other": {"reference": f"Patient/{survivor.id}"}, "type": "replaced-by"}]
            assert survivor.resource and survivor.resource["link"] == [
                {"other": {"reference": f"Patient/{replaced.id}"}, "type": "replaces"}]
            # what MRG does not say about the old patient is kept from its stored version
            assert replaced.resource["name"] == before.resource["name"]  # type: ignore[index]
            assert replaced.resource["birthDate"] == "2018-02-05"
            # identifiers add up: MRG-1 names one, the stored patient has two
            assert [i["value"] for i in replaced.resource["identifier"]] == ["56789", "777"]
            history, total = await store.history(CTX, "Patient", replaced.id)
            assert total == 2 and history[1].resource and history[1].resource["active"] is True
        finally:
            await store.close()

    run(scenario())


def test_unsupported_message_is_kept_as_rejected_and_can_be_retried(db: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            pipeline = Pipeline(store)
            before = await versions(store)
            result = await pipeline.ingest(CTX, "hl7v2", sample("hapi_omd_o03.hl7"))
            assert result.status == "rejected"
            assert result.reason == (
                "MSH-9.1: Message type OMD is not supported (ADT and ORU^R01 are)")
            assert await versions(store) == before  # nothing of it was stored
            (dead,) = await pipeline.rejected(CTX)
            assert dead.id == result.input_id and dead.content == sample("hapi_omd_o03.hl7")
            again = await pipeline.retry(CTX, dead.id)
            assert again.status == "rejected" and again.input_id == dead.id
            assert len(await store.list_inputs(CTX)) == 1
        finally:
            await store.close()

    run(scenario())


def _broken_then_fixed(broken: list[bool]) -> Any:
    """A translator whose bundle fails FHIR validation until `broken[0]` is False."""

    def translate(raw: bytes) -> Translation:
        patient: dict[str, Any] = {"resourceType": "Patient", "identifier": [
            {"system": "urn:test", "value": raw.decode()}]}
        if broken[0]:
            patient["birthDate"] = "not a date"
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:6b1f7e1e-0000-4000-8000-000000000001",
             "resource": copy.deepcopy(patient),
             "request": {"method": "PUT", "url": f"Patient?identifier=urn:test|{raw.decode()}"}}]}
        return Translation(bundle, Source(kind="test", sender="unit test"))

    return translate


def test_fhir_validation_failure_is_rejected_with_where_and_retry_after_fix(db: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            broken = [True]
            pipeline = Pipeline(store, {"test": _broken_then_fixed(broken)})
            result = await pipeline.ingest(CTX, "test", b"p1")
            assert result.status == "rejected"
            assert result.reason is not None and result.reason.startswith("FHIR 400")
            assert "Bundle.entry[0].resource.birthDate" in result.reason
            assert "not a date" not in result.reason
            assert await versions(store) == 0  # all or nothing: not even the Provenance

            broken[0] = False
            fixed = await pipeline.retry(CTX, result.input_id or 0)
            assert fixed.status == "stored" and fixed.input_id == result.input_id
            kept = await store.get_input(CTX, fixed.input_id or 0)
            assert kept is not None and kept.status == "stored" and kept.reason is None
            assert await pipeline.rejected(CTX) == []
            assert (await pipeline.retry(CTX, fixed.input_id or 0)).status == "duplicate"
        finally:
            await store.close()

    run(scenario())


def test_unknown_feed_is_a_clear_error(db: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            with pytest.raises(ValueError, match="no translator for feed 'fax'"):
                await Pipeline(store).ingest(CTX, "fax", b"x")
        finally:
            await store.close()

    run(scenario())


def test_ingest_files_reads_every_sample(db: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            # two messages in one file with LF endings, plus the whole sample folder
            pair = tmp_path / "pair.hl7"
            pair.write_bytes(sample("google_adt_a01_ex1.hl7") + b"\n"
                             + sample("hapi_adt_a03.hl7"))
            summary = await ingest_files(Pipeline(store), CTX, [pair, HL7])
            assert summary.files == 27
            assert summary.messages == 28
            # fhirconverter_ORU-R01-01 names the visit (PV1-19 40007716, AccMng) that
            # fhirconverter_ADT-A01-01 admitted another patient to: refused (F27)
            assert (summary.stored, summary.duplicate, summary.rejected) == (13, 2, 13)
            assert "28 messages: 13 stored, 2 duplicate, 13 rejected" in str(summary)
        finally:
            await store.close()

    run(scenario())


def test_translator_bug_keeps_the_input_and_logs_no_content(
        db: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(raw: bytes) -> Translation:
        raise KeyError(raw.decode())  # an exception whose text quotes the input

    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            result = await Pipeline(store, {"test": broken}).ingest(CTX, "test", b"DOE^JANE")
            assert result.status == "rejected"
            assert result.reason == "internal error in the test translator (KeyError)"
            kept = await store.get_input(CTX, result.input_id or 0)
            assert kept is not None and kept.content == b"DOE^JANE"
        finally:
            await store.close()

    with caplog.at_level("DEBUG"):
        run(scenario())
    assert "KeyError at" in caplog.text
    assert "DOE" not in caplog.text


def test_store_failure_during_the_transaction_keeps_the_input_as_rejected(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import adapters.pipeline as pipeline_module

    async def failing(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("disk full")

    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            monkeypatch.setattr(pipeline_module, "process_bundle", failing)
            result = await Pipeline(store).ingest(CTX, "hl7v2", sample("hapi_adt_a03.hl7"))
            assert result.status == "rejected"
            assert result.reason == "internal error while storing (RuntimeError)"
            monkeypatch.undo()
            again = await Pipeline(store).retry(CTX, result.input_id or 0)
            assert again.status == "stored" and again.input_id == result.input_id
        finally:
            await store.close()

    run(scenario())


def test_a_resent_rejected_input_is_counted_on_its_entry_and_a_success_settles_it(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same content on the same feed is one dead letter: each resend while it fails
    counts on that entry (no new row), and the resend that succeeds stores it under the
    same input id, leaving nothing rejected."""
    import adapters.pipeline as pipeline_module

    async def failing(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("disk full")

    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            raw = sample("hapi_adt_a03.hl7")
            monkeypatch.setattr(pipeline_module, "process_bundle", failing)
            failed = [await Pipeline(store).ingest(CTX, "hl7v2", raw) for _ in range(3)]
            assert {r.input_id for r in failed} == {failed[0].input_id}
            (dead,) = await Pipeline(store).rejected(CTX)
            assert dead.id == failed[0].input_id
            assert dead.result is not None and dead.result["received"] == 3
            assert dead.result["last_received"] >= dead.received_at
            monkeypatch.undo()
            resent = await Pipeline(store).ingest(CTX, "hl7v2", raw)  # the sender tries again
            assert (resent.status, resent.input_id) == ("stored", dead.id)
            assert await Pipeline(store).rejected(CTX) == []
            assert len(await store.list_inputs(CTX)) == 1
            settled = await Pipeline(store).retry(CTX, dead.id)
            assert (settled.status, settled.input_id) == ("duplicate", dead.id)
        finally:
            await store.close()

    run(scenario())


def test_retry_of_an_input_stored_since_under_another_id_settles_it(db: Path) -> None:
    """A store written before resends were counted may hold the rejected copy and the
    stored copy as two entries: a retry of the rejected one settles it as a duplicate."""

    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            raw = sample("hapi_adt_a03.hl7")
            async with store.transaction(CTX) as txn:
                old = await txn.record_input("hl7v2", raw, "rejected", reason="disk full")
            stored = await Pipeline(store).ingest(CTX, "hl7v2", raw)
            assert stored.input_id == old  # a resend settles the entry it finds
            async with store.transaction(CTX) as txn:  # the old layout: two entries
                old = await txn.record_input("hl7v2", raw, "rejected", reason="disk full")
            settled = await Pipeline(store).retry(CTX, old)
            assert (settled.status, settled.input_id) == ("duplicate", stored.input_id)
            assert await Pipeline(store).rejected(CTX) == []
            kept = await store.get_input(CTX, old)
            assert kept is not None and kept.result is not None
            assert kept.result["duplicate_of"] == stored.input_id
        finally:
            await store.close()

    run(scenario())
