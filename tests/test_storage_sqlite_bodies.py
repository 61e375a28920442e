"""The SQLite store keeps each version's body once: the current one in `resources`,
superseded ones in `versions` (fhir_server/storage/sqlite.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

CTX = Context()


def _patient(family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "id": "p1", "name": [{"family": family}]}


def test_each_version_body_is_stored_once_and_read_back(tmp_path: Path) -> None:
    asyncio.run(_bodies(tmp_path))


async def _bodies(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "bodies.db")
    try:
        for family in ("Chalmers", "Windsor", "Ng"):
            async with store.transaction(CTX) as txn:
                await txn.update(_patient(family))
        conn = store._writer
        rows = conn.execute(
            "SELECT version, body IS NULL FROM versions WHERE id = 'p1' ORDER BY version"
        ).fetchall()
        assert rows == [(1, 0), (2, 0), (3, 1)]  # the current body lives in resources only
        for version, family in ((1, "Chalmers"), (2, "Windsor"), (3, "Ng")):
            found = await store.vread(CTX, "Patient", "p1", version)
            assert found is not None
            assert json.loads(found.body)["name"] == [{"family": family}]
        history, total = await store.history(CTX, "Patient", "p1")
        assert total == 3
        assert [json.loads(v.body)["name"][0]["family"] for v in history] == [
            "Ng", "Windsor", "Chalmers"
        ]

        async with store.transaction(CTX) as txn:
            await txn.delete("Patient", "p1")
        rows = conn.execute(
            "SELECT version, deleted, body IS NULL FROM versions WHERE id = 'p1' ORDER BY version"
        ).fetchall()
        assert rows == [(1, 0, 0), (2, 0, 0), (3, 0, 0), (4, 1, 1)]
        found = await store.vread(CTX, "Patient", "p1", 3)
        assert found is not None and json.loads(found.body)["name"] == [{"family": "Ng"}]
        deleted = await store.vread(CTX, "Patient", "p1", 4)
        assert deleted is not None and deleted.deleted and deleted.body is None

        async with store.transaction(CTX) as txn:  # recreated after the delete
            await txn.update(_patient("Okafor"))
        history, total = await store.history(CTX, "Patient", "p1")
        assert total == 5
        assert history[0].version == 5 and json.loads(history[0].body)["name"] == [
            {"family": "Okafor"}
        ]
        assert history[1].deleted and history[1].body is None
    finally:
        await store.close()


def _observation(n: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"o{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7",
                             "display": "Hemoglobin [Mass/volume] in Blood"}]},
        "subject": {"reference": f"Patient/p{n % 7}"},
        "valueQuantity": {"value": n, "unit": "g/dL", "system": "http://unitsofmeasure.org",
                          "code": "g/dL"},
    }  # fmt: skip


def test_bodies_are_compressed_with_the_files_dictionary_and_read_back(tmp_path: Path) -> None:
    asyncio.run(_compressed(tmp_path))


async def _compressed(tmp_path: Path) -> None:
    from fhir_server.storage import sqlite_bodies
    from search.query import parse_search

    path = tmp_path / "compressed.db"
    store = await SQLiteStore.open(path)
    try:
        async with store.batch(CTX):
            for n in range(300):
                async with store.transaction(CTX) as txn:
                    await txn.update(_observation(n))
        conn = store._writer
        magic = conn.execute(
            "SELECT count(*) FROM resources WHERE substr(body, 1, 2) = ?", (sqlite_bodies.MAGIC,)
        ).fetchone()[0]
        assert magic == 300 - sqlite_bodies._SAMPLE_BODIES + 1  # plain until the sample is full
        (size,) = conn.execute(
            "SELECT avg(length(body)) FROM resources WHERE substr(body, 1, 2) = ?",
            (sqlite_bodies.MAGIC,),
        ).fetchone()
        assert size < 100  # the plain JSON is about 330 bytes
        async with store.transaction(CTX) as txn:
            await txn.update({**_observation(299), "status": "amended"})
    finally:
        await store.close()

    sqlite_bodies._known.clear()  # as a new process: the dictionary comes from the file
    store = await SQLiteStore.open(path)
    try:
        found = await store.read(CTX, "Observation", "o299")
        assert found is not None and json.loads(found.body)["status"] == "amended"
        first = await store.vread(CTX, "Observation", "o299", 1)
        assert first is not None and json.loads(first.body)["status"] == "final"
        assert json.loads(first.body)["valueQuantity"]["value"] == 299
        page = await store.search(
            CTX, parse_search("Observation", [("subject", "Patient/p3"), ("_count", "100")])
        )
        assert sorted(json.loads(r.body)["id"] for r in page.resources) == sorted(
            f"o{n}" for n in range(300) if n % 7 == 3
        )
        async with store.transaction(CTX) as txn:  # unchanged content is recognised
            result = await txn.update(_observation(5))
        assert result.outcome == "unchanged"
    finally:
        await store.close()


def test_a_dictionary_saved_by_a_rolled_back_transaction_is_not_used(tmp_path: Path) -> None:
    asyncio.run(_rolled_back(tmp_path))


async def _rolled_back(tmp_path: Path) -> None:
    from fhir_server.storage import sqlite_bodies

    store = await SQLiteStore.open(tmp_path / "rollback.db")
    try:
        async with store.batch(CTX):
            for n in range(sqlite_bodies._SAMPLE_BODIES - 1):
                async with store.transaction(CTX) as txn:
                    await txn.update(_observation(n))
        try:
            async with store.transaction(CTX) as txn:  # completes the sample, then fails
                await txn.update(_observation(1000))
                raise RuntimeError("client went away")
        except RuntimeError:
            pass
        conn = store._writer
        assert conn.execute("SELECT count(*) FROM body_dictionaries").fetchone() == (0,)
        async with store.transaction(CTX) as txn:
            await txn.update(_observation(1001))
        (body,) = conn.execute("SELECT body FROM resources WHERE id = 'o1001'").fetchone()
        assert body[:1] == b"{"  # plain again, until a new sample is complete
        found = await store.read(CTX, "Observation", "o1001")
        assert found is not None and json.loads(found.body)["id"] == "o1001"
    finally:
        await store.close()


def _organization(n: int) -> dict[str, object]:
    return {
        "resourceType": "Organization",
        "id": f"org{n}",
        "active": True,
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                              "code": "prov", "display": "Healthcare Provider"}]}],
        "name": f"General Hospital {n}",
        "telecom": [{"system": "phone", "value": f"555-01{n:04d}", "use": "work"}],
        "address": [{"line": [f"{n} Main Street"], "city": "Springfield", "country": "US"}],
    }  # fmt: skip


_READ_BACK = """
import asyncio, hashlib, sys
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

async def main() -> None:
    store = await SQLiteStore.open(sys.argv[1])
    try:
        for ref in sys.argv[2:]:
            rtype, rid = ref.split("/")
            found = await store.read(Context(), rtype, rid)
            print(ref, hashlib.sha256(found.body).hexdigest())
    finally:
        await store.close()

asyncio.run(main())
"""


def test_a_type_the_dictionary_has_no_sample_of_gets_a_new_dictionary(tmp_path: Path) -> None:
    asyncio.run(_resampled(tmp_path))


async def _resampled(tmp_path: Path) -> None:
    import hashlib
    import subprocess
    import sys
    import zlib

    from fhir_server.storage import sqlite_bodies

    path = tmp_path / "resampled.db"
    store = await SQLiteStore.open(path)
    written: dict[str, dict[str, object]] = {}
    try:
        async with store.batch(CTX):
            for resource in [*map(_organization, range(300)), *map(_observation, range(100))]:
                async with store.transaction(CTX) as txn:
                    await txn.update(resource)
                written[f"{resource['resourceType']}/{resource['id']}"] = resource
        conn = store._writer
        dictionaries = dict(conn.execute("SELECT id, dictionary FROM body_dictionaries"))
        assert len(dictionaries) == 2
        rows = conn.execute(
            "SELECT type, id, body FROM resources WHERE substr(body, 1, 2) = ?",
            (sqlite_bodies.MAGIC,),
        ).fetchall()
        by_dictionary: dict[str, dict[int, int]] = {}
        for rtype, _, body in rows:
            used = int.from_bytes(body[2:10], "big")
            by_dictionary.setdefault(rtype, {})
            by_dictionary[rtype][used] = by_dictionary[rtype].get(used, 0) + 1
        first = by_dictionary["Organization"]
        assert len(first) == 1  # every compressed Organization predates the re-sample
        (organizations_only,) = first
        assert b"Observation" not in dictionaries[organizations_only]
        # the 12th Observation completes the sample of a type the dictionary lacked
        assert by_dictionary["Observation"][organizations_only] == 11
        (second,) = set(by_dictionary["Observation"]) - {organizations_only}
        assert by_dictionary["Observation"][second] == 89
        assert b'"resourceType":"Observation"' in dictionaries[second].replace(b" ", b"")

        # the stored bytes of the Observations compressed with the new dictionary, against
        # the same JSON deflated with the Organization-only dictionary
        new_sizes, old_sizes = [], []
        for rtype, rid, body in rows:
            if rtype != "Observation" or int.from_bytes(body[2:10], "big") != second:
                continue
            plain = sqlite_bodies.decode(conn, body)
            assert plain is not None
            deflater = zlib.compressobj(
                3, zlib.DEFLATED, -15, zdict=dictionaries[organizations_only]
            )
            old_sizes.append(len(deflater.compress(plain) + deflater.flush()) + 10)
            new_sizes.append(len(body))
        new_avg, old_avg = sum(new_sizes) / len(new_sizes), sum(old_sizes) / len(old_sizes)
        assert new_avg < 0.6 * old_avg, (new_avg, old_avg)

        local: dict[str, str] = {}
        for ref, resource in written.items():
            rtype, rid = ref.split("/")
            found = await store.read(CTX, rtype, rid)
            assert found is not None
            read = json.loads(found.body)
            read.pop("meta")
            assert read == resource
            local[ref] = hashlib.sha256(found.body).hexdigest()
    finally:
        await store.close()

    # a process that never saw either dictionary reads the same bytes
    refs = ["Organization/org0", "Organization/org299", "Observation/o5", "Observation/o99"]
    out = subprocess.run(
        [sys.executable, "-c", _READ_BACK, str(path), *refs],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.split()
    assert dict(zip(out[::2], out[1::2])) == {ref: local[ref] for ref in refs}


def test_a_rolled_back_re_sample_leaves_no_dictionary_behind(tmp_path: Path) -> None:
    asyncio.run(_resample_rolled_back(tmp_path))


async def _resample_rolled_back(tmp_path: Path) -> None:
    from fhir_server.storage import sqlite_bodies

    store = await SQLiteStore.open(tmp_path / "resample-rollback.db")
    try:
        async with store.batch(CTX):
            for n in range(300):
                async with store.transaction(CTX) as txn:
                    await txn.update(_organization(n))
            for n in range(sqlite_bodies._SAMPLES_PER_TYPE - 1):
                async with store.transaction(CTX) as txn:
                    await txn.update(_observation(n))
        conn = store._writer
        assert conn.execute("SELECT count(*) FROM body_dictionaries").fetchone() == (1,)
        try:
            async with store.transaction(CTX) as txn:  # completes the sample, then fails
                await txn.update(_observation(1000))
                raise RuntimeError("client went away")
        except RuntimeError:
            pass
        assert conn.execute("SELECT count(*) FROM body_dictionaries").fetchone() == (1,)
        async with store.transaction(CTX) as txn:
            await txn.update(_observation(1001))
        assert conn.execute("SELECT count(*) FROM body_dictionaries").fetchone() == (2,)
        (body,) = conn.execute("SELECT body FROM resources WHERE id = 'o1001'").fetchone()
        used = int.from_bytes(body[2:10], "big")
        assert conn.execute(
            "SELECT count(*) FROM body_dictionaries WHERE id = ?", (used,)
        ).fetchone() == (1,)
        sqlite_bodies._known.clear()  # read from the file, not the process's cache
        for rid in ("o1001", "o0", "org7"):
            rtype = "Organization" if rid.startswith("org") else "Observation"
            found = await store.read(CTX, rtype, rid)
            assert found is not None and json.loads(found.body)["id"] == rid
        assert await store.read(CTX, "Observation", "o1000") is None
    finally:
        await store.close()
