"""$reindex end to end: a custom SearchParameter becomes searchable, a job interrupted
half-way resumes from its cursor, progress is visible, bad input is a 400/404."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server import reindex
from fhir_server.app import create_app
from fhir_server.storage import sqlite_fulltext
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

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


async def test_an_interrupted_job_resumes_from_its_cursor(tmp_path: Path) -> None:
    path = tmp_path / "fhir.db"
    ctx = Context()
    store = await SQLiteStore.open(path)
    async with store.transaction(ctx) as txn:
        for n in range(7):
            await txn.create(_patient(f"p{n}", "F" if n % 2 else "M"), f"p{n}")
        await txn.create({"resourceType": "Observation", "status": "final",
                          "code": {"text": "x"}}, "o1")  # fmt: skip
        await txn.create(SEARCH_PARAMETER, SEARCH_PARAMETER["id"])
    job = await reindex.start(store, ctx, ("Patient",))
    assert (job.total, job.processed) == (7, 0)
    job = await reindex.run(store, ctx, job, batch_size=2, max_batches=2)
    assert (job.status, job.processed, job.cursor > 0) == ("in-progress", 4, True)
    await store.close()  # the server dies here

    store = await SQLiteStore.open(path)
    try:
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://t/fhir/") as client:
            assert (await client.get("Patient", params={"birthsex": "F"})).status_code == 400
            status = await client.get(f"$reindex/{job.id}")
            assert status.status_code == 202
            assert status.headers["x-progress"] == "4 of 7 resources"
            assert _values(status.json())["status"] == "interrupted"

            resumed = await client.post("Patient/$reindex")  # same scope: the same job
            assert resumed.headers["content-location"].endswith(f"/$reindex/{job.id}")
            final = _values((await _wait(client, resumed.headers["content-location"])).json())
            assert (final["status"], final["processed"], final["total"]) == ("completed", 7, 7)
            assert await _ids(client, {"birthsex": "F"}) == {"p1", "p3", "p5"}
    finally:
        await store.close()


async def test_reindex_rebuilds_the_full_text_index(
    client: httpx.AsyncClient, store: SQLiteStore
) -> None:
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
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fhir_server.cli import reindex_store
    from fhir_server.config import database_path
    from search import custom

    path = database_path(tmp_path)
    ctx = Context()
    store = await SQLiteStore.open(path)
    async with store.transaction(ctx) as txn:
        for n in range(5):
            await txn.create(_patient(f"p{n}", "F"), f"p{n}")
        await txn.create(SEARCH_PARAMETER, SEARCH_PARAMETER["id"])
    job = await reindex.run(store, ctx, await reindex.start(store, ctx, ()), batch_size=2,
                            max_batches=1)  # fmt: skip
    await store.close()

    assert await reindex_store(tmp_path, ()) == 0
    out = capsys.readouterr().out
    assert f"resuming reindex job {job.id} at 2 of 6" in out
    assert f"reindex job {job.id} completed: 6 resources" in out
    store = await SQLiteStore.open(path)  # reloads the registry from the file
    try:
        assert custom.REGISTRY.pending() == []
        assert set(custom.REGISTRY.of_type("Patient")) == {"birthsex"}
    finally:
        await store.close()
