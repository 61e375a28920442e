"""$reindex end to end: a custom SearchParameter becomes searchable, a job interrupted
half-way resumes from its cursor, progress is visible, bad input is a 400/404.

Every test runs on each backend of tests/storage_backends.py: SQLite on a real file,
the MongoDB store on mongomock (tests/mongo_async.py), and a real MongoDB when
FHIR_FUSION_TEST_MONGODB names one. A server "dying" is its store closed and opened
again on the same file or database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mongo_async import AsyncMockClient
from storage_backends import BACKENDS, REAL_MONGODB

from fhir_server import reindex
from fhir_server.app import create_app
from fhir_server.storage import sqlite_fulltext
from fhir_server.storage.base import Context
from fhir_server.storage.mongodb import MongoStore
from fhir_server.storage.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


class Backend:
    """One backend's store, which can be closed and opened again on the same data."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "fhir.db"
        self.mock = AsyncMockClient() if kind == "mongomock" else None
        self.database = f"fhir_fusion_test_{uuid.uuid4().hex[:12]}"
        self.url = REAL_MONGODB or "mongodb://mongomock/fhir"

    async def open(self) -> Any:
        if self.kind == "sqlite":
            return await SQLiteStore.open(self.path)
        if self.mock is not None:
            return await MongoStore.open(self.url, client=self.mock)
        return await MongoStore.open(self.url, database=self.database)

    async def drop(self) -> None:
        if self.kind == "mongodb":
            store = await self.open()
            await store.client.drop_database(self.database)
            await store.close()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    opened = Backend(request.param, tmp_path)
    try:
        yield opened
    finally:
        await opened.drop()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Any]:
    """The store the `client` fixture (tests/conftest.py) serves: each backend in turn."""
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.close()

BIRTHSEX = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"
SEARCH_PARAMETER: dict[str, Any] = {
    "resourceType": "SearchParameter",
    "id": "patient-birthsex",
    "url": "http://example.org/fhir/SearchParameter/patient-birthsex",
    "name": "birthsex",
    "status": "active",
    "description": "Birth sex (US Core extension)",
    "code": "birthsex",
    "base": ["Patient"],
    "type": "token",
    "expression": f"Patient.extension.where(url='{BIRTHSEX}').value",
}


def _patient(pid: str, sex: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "extension": [{"url": BIRTHSEX, "valueCode": sex}],
        "name": [{"family": f"Family{pid}"}],
    }


async def _put(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await client.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text


async def _ids(client: httpx.AsyncClient, params: dict[str, str]) -> set[str]:
    response = await client.get("Patient", params=params)
    assert response.status_code == 200, response.text
    return {entry["resource"]["id"] for entry in response.json().get("entry", [])}


async def _wait(client: httpx.AsyncClient, url: str) -> httpx.Response:
    for _ in range(200):
        response = await client.get(url)
        if response.status_code != 202:
            return response
        await asyncio.sleep(0.01)
    raise AssertionError("the reindex job did not finish")


def _values(parameters: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for param in parameters["parameter"]:
        value = next(v for k, v in param.items() if k.startswith("value"))
        out.setdefault(param["name"], []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


async def test_custom_search_parameter_is_searchable_after_reindex(
    client: httpx.AsyncClient,
) -> None:
    for pid, sex in (("p1", "F"), ("p2", "M"), ("p3", "F")):
        await _put(client, _patient(pid, sex))
    await _put(client, SEARCH_PARAMETER)
    duplicate = {**SEARCH_PARAMETER, "id": "another"}
    clash = await client.put("SearchParameter/another", json=duplicate)
    assert clash.status_code == 400
    assert clash.json()["issue"][0]["expression"] == ["SearchParameter.code"]

    pending = await client.get("Patient", params={"birthsex": "F"})
    assert pending.status_code == 400
    issue = pending.json()["issue"][0]
    assert issue["expression"] == ["birthsex"]
    assert "run $reindex" in issue["diagnostics"]

    await _put(client, _patient("p4", "F"))  # written after the definition
    started = await client.post("$reindex", params={"type": "Patient"})
    assert started.status_code == 202
    location = started.headers["content-location"]
    assert location.startswith("http://fhir.test/fhir/$reindex/")
    done = await _wait(client, location)
    assert done.status_code == 200
    status = _values(done.json())
    assert status["status"] == "completed"
    assert status["type"] == "Patient"
    assert status["processed"] == status["total"] == 4

    assert await _ids(client, {"birthsex": "F"}) == {"p1", "p3", "p4"}
    assert await _ids(client, {"birthsex": "M", "family": "familyp2"}) == {"p2"}
    # indexed on write from now on
    await _put(client, _patient("p5", "M"))
    assert await _ids(client, {"birthsex": "M"}) == {"p2", "p5"}
    # a changed expression is pending again until the next reindex
    changed = {**SEARCH_PARAMETER, "expression": "Patient.gender"}
    await _put(client, changed)
    assert (await client.get("Patient", params={"birthsex": "F"})).status_code == 400


async def test_an_interrupted_job_resumes_from_its_cursor(backend: Backend) -> None:
    ctx = Context()
    store = await backend.open()
    async with store.transaction(ctx) as txn:
        for n in range(7):
            await txn.create(_patient(f"p{n}", "F" if n % 2 else "M"), f"p{n}")
        await txn.create({"resourceType": "Observation", "status": "final",
                          "code": {"text": "x"}}, "o1")  # fmt: skip
        await txn.create(SEARCH_PARAMETER, SEARCH_PARAMETER["id"])
    job = await reindex.start(store, ctx, ("Patient",))
    assert (job.total, job.processed, job.cursor) == (7, 0, "")
    job = await reindex.run(store, ctx, job, batch_size=2, max_batches=2)
    assert (job.status, job.processed, job.cursor != "") == ("in-progress", 4, True)
    await store.close()  # the server dies here

    store = await backend.open()
    try:
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://t/fhir/") as client:
            assert (await client.get("Patient", params={"birthsex": "F"})).status_code == 400
            resumed = await client.post("Patient/$reindex")  # same scope: the same job
            assert resumed.headers["content-location"].endswith(f"/$reindex/{job.id}")
            assert resumed.headers["x-progress"] == "4 of 7 resources"
            final = _values((await _wait(client, resumed.headers["content-location"])).json())
            assert (final["status"], final["processed"], final["total"]) == ("completed", 7, 7)
            assert await _ids(client, {"birthsex": "F"}) == {"p1", "p3", "p5"}
            # the next call with this scope is a new job over the same resources
            again = await client.post("Patient/$reindex")
            assert not again.headers["content-location"].endswith(f"/$reindex/{job.id}")
            assert _values((await _wait(client, again.headers["content-location"])).json())[
                "processed"] == 7  # fmt: skip
    finally:
        await store.close()


async def test_a_running_job_is_the_answer_to_the_same_scope(
    client: httpx.AsyncClient, store: Any
) -> None:
    """A second POST while the job runs names that job; another scope gets its own."""
    for n in range(3):
        await _put(client, _patient(f"p{n}", "F"))
    job = await reindex.start(store, Context(), ("Patient",))  # started, not yet run
    same = await client.post("$reindex", params={"type": "Patient"})
    assert same.status_code == 202
    assert same.headers["content-location"] == f"http://fhir.test/fhir/$reindex/{job.id}"
    other = await client.post("Observation/$reindex")
    assert not other.headers["content-location"].endswith(f"/$reindex/{job.id}")
    assert _values((await _wait(client, same.headers["content-location"])).json())[
        "processed"] == 3  # fmt: skip
    # jobs are the tenant's own
    assert await reindex.get(store, Context(tenant="another"), job.id) is None


async def test_concurrent_starts_of_one_scope_make_one_job(store: Any) -> None:
    """Two workers POSTing the same scope at once get the same job (MongoDB: the
    running job's unique scope key; SQLite: its write transaction)."""
    ctx = Context()
    first, second = await asyncio.gather(
        reindex.start(store, ctx, ("Patient",)), reindex.start(store, ctx, ("Patient",))
    )
    assert first.id == second.id
    assert first.status == "in-progress"


async def test_a_job_another_worker_runs_is_left_to_it(
    client: httpx.AsyncClient, store: Any
) -> None:
    """Several API workers on one MongoDB store: a job whose last batch another worker
    ran less than LIVE_SECONDS ago is in progress there, and a POST here does not run it
    a second time; once that worker has gone quiet the job is interrupted, and a POST
    here resumes it."""
    from datetime import UTC, datetime, timedelta

    from fhir_server.storage.reindex_jobs import LIVE_SECONDS

    if not isinstance(store, MongoStore):
        pytest.skip("one SQLite file has one server process")
    for n in range(3):
        await _put(client, _patient(f"p{n}", "F"))
    ctx = Context()
    job = await reindex.run(store, ctx, await reindex.start(store, ctx, ("Patient",)),
                            batch_size=1, max_batches=1)  # fmt: skip
    jobs = store.db["reindex_jobs"]
    now = datetime.now(UTC)
    await jobs.update_one({"_id": job.id}, {"$set": {
        "runner": "another-worker", "updated_at": now.isoformat(timespec="microseconds")}})
    status = await client.get(f"$reindex/{job.id}")
    assert (status.status_code, _values(status.json())["status"]) == (202, "in-progress")
    assert status.headers["x-progress"] == "1 of 3 resources"
    again = await client.post("Patient/$reindex")
    assert again.headers["content-location"].endswith(f"/$reindex/{job.id}")
    await asyncio.sleep(0.05)
    assert _values((await client.get(f"$reindex/{job.id}")).json())["processed"] == 1

    quiet = now - timedelta(seconds=LIVE_SECONDS + 1)
    await jobs.update_one({"_id": job.id}, {"$set": {
        "updated_at": quiet.isoformat(timespec="microseconds")}})
    # that worker has gone: the status poll resumes the job here (break-new finding 10)
    status = await client.get(f"$reindex/{job.id}")
    assert (status.status_code, _values(status.json())["status"]) == (202, "in-progress")
    final = _values((await _wait(client, f"$reindex/{job.id}")).json())
    assert (final["status"], final["processed"], final["total"]) == ("completed", 3, 3)


async def test_reindex_rebuilds_the_full_text_index(
    client: httpx.AsyncClient, store: Any
) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("full text on MongoDB is the search index's (fhir-fusion reindex)")
    await _put(client, {"resourceType": "Patient", "id": "p1",
                        "text": {"status": "generated",
                                 "div": '<div xmlns="http://www.w3.org/1999/xhtml">Asthma</div>'}})
    # a store written before the FTS table existed has no rows in it
    async with store.transaction(Context()) as txn:
        sqlite_fulltext.clear(txn.connection)
    assert await _ids(client, {"_text": "asthma"}) == set()
    started = await client.post("$reindex")
    assert _values((await _wait(client, started.headers["content-location"])).json())[
        "status"] == "completed"  # fmt: skip
    assert await _ids(client, {"_text": "asthma"}) == {"p1"}


async def test_reindex_rebuilds_lost_index_entries_on_mongodb(
    client: httpx.AsyncClient, store: Any
) -> None:
    """A resource document whose index entries are gone (written before a parameter
    was indexed this way) is found again after $reindex; a delete marker counts as one
    of the resources gone through, as on SQLite."""
    if not isinstance(store, MongoStore):
        pytest.skip("the index entries inside MongoDB documents")
    await _put(client, _patient("p1", "F"))
    await _put(client, _patient("p2", "M"))
    assert (await client.delete("Patient/p2")).status_code in (200, 204)
    await store.db["resources"].update_one({"id": "p1"}, {"$unset": {"idx": ""}})
    assert await _ids(client, {"family": "familyp1"}) == set()
    started = await client.post("Patient/$reindex")
    final = _values((await _wait(client, started.headers["content-location"])).json())
    assert (final["processed"], final["total"]) == (2, 2)
    assert await _ids(client, {"family": "familyp1"}) == {"p1"}


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"expression": None}, "SearchParameter.expression"),
        ({"expression": "Patient.name.where(("}, "SearchParameter.expression"),
        ({"type": "composite"}, "SearchParameter.type"),
        ({"code": "name"}, "SearchParameter.code"),  # Patient already has it
        ({"code": "_bad"}, "SearchParameter.code"),
        ({"base": ["Patient", "NotAType"]}, "SearchParameter.base"),
        ({"base": None}, "SearchParameter.base"),
    ],
)
async def test_malformed_search_parameter_is_a_400_naming_the_element(
    client: httpx.AsyncClient, change: dict[str, Any], path: str
) -> None:
    resource = {k: v for k, v in {**SEARCH_PARAMETER, **change}.items() if v is not None}
    response = await client.post("SearchParameter", json=resource)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(e.startswith(path) for i in outcome["issue"] for e in i.get("expression", []))
    assert (await client.get("SearchParameter")).json()["total"] == 0


async def test_r4_search_parameters_can_be_stored_as_resources(
    client: httpx.AsyncClient,
) -> None:
    """The standard definition (same code and url) is built in: stored, not custom."""
    standard = {**SEARCH_PARAMETER, "id": "Patient-name", "code": "name",
                "url": "http://hl7.org/fhir/SearchParameter/Patient-name", "type": "string",
                "expression": "Patient.name"}  # fmt: skip
    assert (await client.put("SearchParameter/Patient-name", json=standard)).status_code == 201
    await _put(client, _patient("p1", "F"))
    assert await _ids(client, {"name": "familyp1"}) == {"p1"}


async def test_bad_reindex_requests(client: httpx.AsyncClient) -> None:
    unknown = await client.post("$reindex", params={"type": "NotAType"})
    assert unknown.status_code == 400
    assert unknown.json()["issue"][0]["expression"] == ["type"]
    body = {"resourceType": "Parameters", "parameter": [{"name": "type", "valueCode": "Nope"}]}
    in_body = await client.post("$reindex", json=body)
    assert in_body.status_code == 400
    assert in_body.json()["issue"][0]["expression"] == ["Parameters.parameter[0].valueCode"]
    assert (await client.post("NotAType/$reindex")).status_code == 404
    assert (await client.get("$reindex/12345")).status_code == 404
    assert (await client.get("$reindex/abc")).status_code == 404
    # an unknown parameter is refused, not ignored into a reindex of everything (finding 13)
    for path in ("$reindex", "Patient/$reindex"):
        typo = await client.post(path, params={"_type": "Patient"})
        assert typo.status_code == 400, typo.text
        assert typo.json()["issue"][0]["expression"] == ["_type"]
        assert "'_type'" in typo.json()["issue"][0]["diagnostics"]
    in_path = {"resourceType": "Parameters",
               "parameter": [{"name": "type", "valueCode": "Patient"}]}  # fmt: skip
    assert (await client.post("Observation/$reindex", json=in_path)).status_code == 400
    assert (await client.get("$reindex/1")).status_code == 404  # no job was started
    ok = await client.post("$reindex", params={"type": "Patient", "_format": "json"})
    assert ok.status_code == 202


async def test_capability_statement_lists_reindex_with_its_definition(
    client: httpx.AsyncClient,
) -> None:
    rest = (await client.get("metadata")).json()["rest"][0]
    # other operations ($ingest, the terminology ones) are listed beside it
    (listed,) = [op for op in rest["operation"] if op["name"] == "reindex"]
    assert listed == {
        "name": "reindex", "definition": "http://fhir.test/fhir/OperationDefinition/reindex"}
    definition = (await client.get("OperationDefinition/reindex")).json()
    assert definition["resourceType"] == "OperationDefinition"
    assert (definition["code"], definition["system"], definition["type"]) == (
        "reindex", True, True)  # fmt: skip
    assert definition["url"] == listed["definition"]


async def test_cli_reindex_resumes_and_completes(
    backend: Backend,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fhir_server import cli
    from fhir_server.config import database_path
    from search import custom

    if backend.kind == "sqlite":
        backend.path = database_path(tmp_path)
    else:  # FHIR_FUSION_STORE names the MongoDB store (mongomock in place of a server)
        monkeypatch.setenv("FHIR_FUSION_STORE", backend.url)

        async def open_mongodb(url: str) -> Any:
            assert url == backend.url
            return await backend.open()

        monkeypatch.setattr(cli, "_open_mongodb", open_mongodb)
    ctx = Context()
    store = await backend.open()
    async with store.transaction(ctx) as txn:
        for n in range(5):
            await txn.create(_patient(f"p{n}", "F"), f"p{n}")
        await txn.create(SEARCH_PARAMETER, SEARCH_PARAMETER["id"])
    job = await reindex.run(store, ctx, await reindex.start(store, ctx, ()), batch_size=2,
                            max_batches=1)  # fmt: skip
    await store.close()

    assert await cli.reindex_store(tmp_path, ()) == 0
    out = capsys.readouterr().out
    assert f"resuming reindex job {job.id} at 2 of 6" in out
    assert f"reindex job {job.id} completed: 6 resources" in out
    custom.REGISTRY.replace_all([])
    store = await backend.open()  # reloads the registry from the store
    try:
        assert custom.REGISTRY.pending() == []
        assert set(custom.REGISTRY.of_type("Patient")) == {"birthsex"}
    finally:
        await store.close()


async def test_a_store_without_reindex_jobs_is_a_501() -> None:
    from fhir_server.errors import FHIRError

    with pytest.raises(FHIRError) as caught:
        await reindex.start(object(), Context(), ())  # type: ignore[arg-type]
    assert caught.value.status == 501
    assert caught.value.outcome()["issue"][0]["code"] == "not-supported"


async def test_a_killed_servers_job_resumes_when_the_server_starts_again(
    tmp_path: Path,
) -> None:
    """break-new finding 10: the job of a server killed mid-way goes on by itself when
    `serve` starts again on the file; the status URL polled by the client reaches 200
    without anyone POSTing $reindex again. Real HTTP (uvicorn), real SQLite file."""
    from live_server import live_server

    ctx = Context()
    store = await SQLiteStore.open(tmp_path / "fhir.db")
    async with store.transaction(ctx) as txn:
        for n in range(9):
            await txn.create(_patient(f"p{n}", "F" if n % 2 else "M"), f"p{n}")
        await txn.create(SEARCH_PARAMETER, SEARCH_PARAMETER["id"])
    job = await reindex.start(store, ctx, ("Patient",))
    job = await reindex.run(store, ctx, job, batch_size=3, max_batches=1)
    assert (job.status, job.processed, job.total) == ("in-progress", 3, 9)
    await store.close()  # killed: no process runs the job any more

    async with live_server(tmp_path) as (url, _store), httpx.AsyncClient(
        base_url=f"{url}/fhir/", timeout=30
    ) as http:
        final = await _wait(http, f"$reindex/{job.id}")
        assert final.status_code == 200, final.text
        values = _values(final.json())
        assert (values["status"], values["processed"], values["total"]) == ("completed", 9, 9)
        assert await _ids(http, {"birthsex": "F"}) == {"p1", "p3", "p5", "p7"}


async def test_progress_never_exceeds_its_total(client: httpx.AsyncClient, store: Any) -> None:
    """break-new finding 8: resources created after the job counted its total are reached
    by its cursor; the progress shown is then `n of n`, never `n of fewer`."""
    for n in range(3):
        await _put(client, _patient(f"p{n}", "F"))
    ctx = Context()
    job = await reindex.start(store, ctx, ("Patient",))
    assert job.total == 3
    for n in range(3, 6):  # written meanwhile, after the cursor
        await _put(client, _patient(f"p{n}", "M"))
    job = await reindex.run(store, ctx, job, batch_size=4, max_batches=1)
    assert (job.processed, job.total) == (4, 3)  # as recorded
    status = await client.get(f"$reindex/{job.id}")
    assert status.headers["x-progress"] == "4 of 4 resources"
    assert _values(status.json())["total"] == 4
    final = _values((await _wait(client, f"$reindex/{job.id}")).json())
    assert (final["status"], final["processed"], final["total"]) == ("completed", 6, 6)


async def test_cli_reindex_refuses_a_folder_without_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """break-new finding 13: a mistyped --data-dir is an error naming it, and no empty
    database is left there."""
    from fhir_server import cli

    missing = tmp_path / "nonexist"
    assert await asyncio.to_thread(cli.main, ["reindex", "--data-dir", str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err
    assert not missing.exists()
    missing.mkdir()  # a folder, but no database in it
    assert await asyncio.to_thread(cli.main, ["reindex", "--data-dir", str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err
    assert list(missing.iterdir()) == []
