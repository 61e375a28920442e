"""The embedded SQLite store against the storage contract, on a real database file."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from fhir_server.errors import FHIRError
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SCHEMA_VERSION, SQLiteStore

CTX = Context()

GLUCOSE = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
    "valueQuantity": {
        "value": Decimal("5.50"),
        "unit": "mmol/L",
        "system": "http://unitsofmeasure.org",
        "code": "mmol/L",
    },
}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "fhir.sqlite3"


def run(coro):  # noqa: ANN001, ANN201 - tiny helper for sync tests
    return asyncio.run(coro)


async def _create(store: SQLiteStore, resource: dict, resource_id: str | None = None):
    async with store.transaction(CTX) as txn:
        return await txn.create(resource, resource_id)


def test_create_assigns_id_version_and_keeps_decimal_digits(db_path: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db_path)
        result = await _create(store, GLUCOSE)
        assert result.outcome == "created"
        stored = result.stored
        assert stored.version == 1
        assert b'"value":5.50' in stored.body
        assert stored.body.startswith(b'{"resourceType":"Observation","id":"')
        read = await store.read(CTX, "Observation", stored.id)
        assert read.resource["meta"]["versionId"] == "1"
        assert read.resource["valueQuantity"]["value"] == Decimal("5.50")
        assert str(read.resource["valueQuantity"]["value"]) == "5.50"
        await store.close()

    run(scenario())


def test_update_versions_and_unchanged_content_writes_nothing(db_path: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db_path)
        first = (await _create(store, GLUCOSE, "glu-1")).stored
        async with store.transaction(CTX) as txn:
            same = await txn.update(first.resource)
        assert same.outcome == "unchanged"
        assert same.stored.version == 1
        amended = {**first.resource, "status": "amended"}
        async with store.transaction(CTX) as txn:
            second = await txn.update(amended, if_match=1)
        assert (second.outcome, second.stored.version) == ("updated", 2)
        assert second.stored.last_updated > first.last_updated
        history, total = await store.history(CTX, "Observation", "glu-1")
        assert total == 2
        assert [(v.version, v.method) for v in history] == [(2, "PUT"), (1, "POST")]
        assert (await store.vread(CTX, "Observation", "glu-1", 1)).resource["status"] == "final"
        await store.close()

    run(scenario())


def test_if_match_mismatch_is_412_and_writes_nothing(db_path: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db_path)
        first = (await _create(store, GLUCOSE, "glu-2")).stored
        with pytest.raises(FHIRError) as caught:
            async with store.transaction(CTX) as txn:
                await txn.update({**first.resource, "status": "amended"}, if_match=7)
        assert caught.value.status == 412
        assert (await store.read(CTX, "Observation", "glu-2")).version == 1
        await store.close()

    run(scenario())


def test_update_as_create_then_delete_then_recreate(db_path: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db_path)
        patient = {"resourceType": "Patient", "id": "pat1", "gender": "male"}
        async with store.transaction(CTX) as txn:
            created = await txn.update(patient)
        assert (created.outcome, created.stored.version) == ("created", 1)
        async with store.transaction(CTX) as txn:
            deleted = await txn.delete("Patient", "pat1")
            again = await txn.delete("Patient", "pat1")
            missing = await txn.delete("Patient", "never-was")
        assert (deleted.outcome, deleted.stored.version) == ("deleted", 2)
        assert again.outcome == "unchanged"
        assert missing.outcome == "not-found"
        marker = await store.read(CTX, "Patient", "pat1")
        assert marker.deleted and marker.resource is None
        async with store.transaction(CTX) as txn:
            revived = await txn.update(patient)
        assert (revived.outcome, revived.stored.version) == ("created", 3)
        history, total = await store.history(CTX, "Patient", "pat1")
        assert [(v.version, v.method, v.deleted) for v in history] == [
            (3, "PUT", False),
            (2, "DELETE", True),
            (1, "PUT", False),
        ]
        await store.close()

    run(scenario())


def test_create_with_existing_id_conflicts(db_path: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db_path)
        await _create(store, GLUCOSE, "dup")
        with pytest.raises(FHIRError) as caught:
            await _create(store, GLUCOSE, "dup")
        assert caught.value.status == 409
        await store.close()

    run(scenario())


def test_failed_transaction_leaves_nothing(db_path: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db_path)
        with pytest.raises(RuntimeError):
            async with store.transaction(CTX) as txn:
                await txn.create(GLUCOSE, "rolled-back")
                await txn.record_input("hl7v2", b"MSH|^~\\&|", "stored")
                raise RuntimeError("entry 2 failed")
        assert await store.read(CTX, "Observation", "rolled-back") is None
        assert await store.list_inputs(CTX) == []
        assert (await store.history(CTX))[1] == 0
        await store.close()

    run(scenario())


def test_history_since_count_and_offset(db_path: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db_path)
        stamps = []
        for n in range(5):
            stamps.append((await _create(store, GLUCOSE, f"h{n}")).stored.last_updated)
        page, total = await store.history(CTX, "Observation", count=2, offset=1)
        assert total == 5
        assert [v.id for v in page] == ["h3", "h2"]
        recent, total = await store.history(CTX, since=stamps[3])
        assert total == 2
        assert [v.id for v in recent] == ["h4", "h3"]
        with pytest.raises(FHIRError) as caught:
            await store.history(CTX, since="last tuesday")
        assert caught.value.status == 400
        await store.close()

    run(scenario())


def test_tenants_do_not_see_each_other(db_path: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db_path)
        other = Context(tenant="hospital-b")
        await _create(store, GLUCOSE, "shared-id")
        assert await store.read(other, "Observation", "shared-id") is None
        async with store.transaction(other) as txn:
            result = await txn.create(GLUCOSE, "shared-id")
        assert result.outcome == "created"
        assert (await store.history(other))[1] == 1
        await store.close()

    run(scenario())


def test_raw_inputs_are_kept_and_found_by_hash(db_path: Path) -> None:
    message = b"MSH|^~\\&|LAB|HOSP|FUSION|HOSP|20240301101530||ORU^R01|MSG1|P|2.5.1\r"
    rejected = b"not an hl7 message"

    async def scenario() -> None:
        store = await SQLiteStore.open(db_path)
        async with store.transaction(CTX) as txn:
            stored_id = await txn.record_input("hl7v2", message, "stored", result={"n": 3})
            rejected_id = await txn.record_input("hl7v2", rejected, "rejected", reason="no MSH")
        from fhir_server.storage.sqlite import content_hash

        found = await store.find_input(CTX, "hl7v2", content_hash(message))
        assert (found.id, found.content, found.result) == (stored_id, message, {"n": 3})
        assert await store.find_input(CTX, "hl7v2", content_hash(rejected)) is None
        listed = await store.list_inputs(CTX, status="rejected")
        assert [(i.id, i.reason) for i in listed] == [(rejected_id, "no MSH")]
        async with store.transaction(CTX) as txn:
            await txn.record_input("hl7v2", rejected, "stored", input_id=rejected_id)
        assert (await store.get_input(CTX, rejected_id)).status == "stored"
        await store.close()

    run(scenario())


def test_data_survives_reopen_and_clock_stays_monotonic(db_path: Path) -> None:
    async def scenario() -> str:
        store = await SQLiteStore.open(db_path)
        stamp = (await _create(store, GLUCOSE, "persist")).stored.last_updated
        await store.close()
        reopened = await SQLiteStore.open(db_path)
        assert (await reopened.read(CTX, "Observation", "persist")).version == 1
        later = (await _create(reopened, GLUCOSE, "after")).stored.last_updated
        assert later > stamp
        await reopened.close()
        return stamp

    run(scenario())
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer fhir-fusion"):
        run(SQLiteStore.open(db_path))


def test_concurrent_transactions_are_serialised(db_path: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db_path)

        async def writer(n: int) -> None:
            async with store.transaction(CTX) as txn:
                await txn.create(GLUCOSE, f"c{n}")
                await asyncio.sleep(0)  # let the others try to interleave
                await txn.update({**GLUCOSE, "id": f"c{n}", "status": "amended"})

        await asyncio.gather(*(writer(n) for n in range(20)))
        history, total = await store.history(CTX, "Observation")
        assert total == 40
        await store.close()

    run(scenario())


def test_batch_commits_once_and_each_transaction_fails_alone(db_path: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db_path)
        other = await SQLiteStore.open(db_path)  # a second process's view of the file
        async with store.batch(CTX):
            await _create(store, GLUCOSE, "b1")
            with pytest.raises(FHIRError):
                async with store.transaction(CTX) as txn:
                    await txn.create(GLUCOSE, "b2")
                    await txn.create(GLUCOSE, "b1")  # 409: rolls back b2 only
            # the task's own reads see its batch; nobody else does before the commit
            assert (await store.read(CTX, "Observation", "b1")).version == 1
            assert await other.read(CTX, "Observation", "b1") is None
        assert (await other.read(CTX, "Observation", "b1")).version == 1
        assert await other.read(CTX, "Observation", "b2") is None
        await other.close()
        await store.close()

    run(scenario())


def test_failed_batch_leaves_nothing(db_path: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(db_path)
        with pytest.raises(RuntimeError):
            async with store.batch(CTX):
                await _create(store, GLUCOSE, "lost")
                raise RuntimeError("the file could not be read to its end")
        assert await store.read(CTX, "Observation", "lost") is None
        await store.close()

    run(scenario())


def test_wal_stays_bounded_under_a_writer_that_never_pauses(tmp_path: Path) -> None:
    """With the background checkpointer unable to keep up (stopped here, so the test
    does not depend on timing), the writer checkpoints and truncates the WAL itself
    once it passes the limit: the WAL does not grow with the data."""

    async def main() -> tuple[int, int]:
        store = await SQLiteStore.open(tmp_path / "wal.sqlite3")
        store._stop.set()
        await asyncio.to_thread(store._checkpointer.join)
        store.WAL_LIMIT_BYTES = 256 * 1024
        wal = tmp_path / "wal.sqlite3-wal"
        largest = 0
        try:
            for i in range(400):
                async with store.transaction(CTX) as txn:
                    await txn.create({**GLUCOSE, "valueQuantity": {
                        **GLUCOSE["valueQuantity"], "value": Decimal(i)}})
                largest = max(largest, wal.stat().st_size if wal.exists() else 0)
            (count,) = store._reader.execute("SELECT count(*) FROM resources").fetchone()
        finally:
            await store.close()
        return largest, count

    largest, count = asyncio.run(main())
    assert count == 400
    # a limit plus one transaction's pages; without the bound it reached 55 MB here
    assert largest < 512 * 1024, largest
