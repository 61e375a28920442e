"""The terminology service on MongoDB storage, over HTTP, answering from the content the
server ships (terminology/data: the LOINC subset, HL7 terminology): $lookup,
$validate-code, $expand with type-ahead, $subsumes, and the token modifiers :in, :not-in,
:above and :below. MongoDB here is mongomock behind tests/mongo_async.py (no MongoDB
server can run on CI machines); the concept-store suites (test_terminology_store.py and
the others importing tests/terminology_backends.py) run on it too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from mongo_async import AsyncMockClient

from fhir_server.app import create_app
from fhir_server.storage.base import Context
from fhir_server.storage.mongodb import MongoStore
from terminology.store import TerminologyError, concept_store

pytestmark = pytest.mark.anyio

LOINC = "http://loinc.org"
VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
VITAL_SIGNS = "http://hl7.org/fhir/ValueSet/observation-vitalsignresult"


def _observation(oid: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]}}  # fmt: skip


def _condition(cid: str, status: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p"},
            "verificationStatus": {"coding": [{"system": VER_STATUS, "code": status}]}}


@pytest.fixture
async def mongo_store() -> AsyncIterator[MongoStore]:
    store = await MongoStore.open("mongodb://mongomock/", client=AsyncMockClient())
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def mongo_client(mongo_store: MongoStore) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(mongo_store))
    async with httpx.AsyncClient(transport=transport, base_url="http://fhir.test/fhir/") as c:
        for resource in (
            _observation("glu", "2345-7"), _observation("sys", "8480-6"),
            _observation("dia", "8462-4"), _condition("prov", "provisional"),
            _condition("diff", "differential"), _condition("conf", "confirmed"),
            _condition("unc", "unconfirmed"),
        ):  # fmt: skip
            r = await c.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
            assert r.status_code == 201, r.text
        yield c


def _values(body: dict[str, Any]) -> dict[str, Any]:
    assert body["resourceType"] == "Parameters", body
    return {p["name"]: next((v for k, v in p.items() if k.startswith("value")), None)
            for p in body["parameter"]}  # fmt: skip


async def test_lookup_of_shipped_loinc(mongo_client: httpx.AsyncClient) -> None:
    r = await mongo_client.get("CodeSystem/$lookup", params={"system": LOINC, "code": "2345-7"})
    assert r.status_code == 200, r.text
    assert _values(r.json())["display"] == "Glucose [Mass/volume] in Serum or Plasma"
    r = await mongo_client.get("CodeSystem/$lookup", params={
        "system": LOINC, "code": "8867-4", "displayLanguage": "zh-CN"})
    assert _values(r.json())["display"] == "心率"  # the subset's Chinese display
    r = await mongo_client.get("CodeSystem/$lookup", params={"system": LOINC, "code": "0000-0"})
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"


async def test_validate_code_and_subsumes(mongo_client: httpx.AsyncClient) -> None:
    r = await mongo_client.get("CodeSystem/$validate-code", params={
        "url": LOINC, "code": "8480-6", "display": "Systolic blood pressure"})
    assert _values(r.json())["result"] is True
    r = await mongo_client.get("ValueSet/$validate-code", params={
        "url": VITAL_SIGNS, "system": LOINC, "code": "2345-7"})
    assert _values(r.json())["result"] is False  # glucose is no vital sign
    r = await mongo_client.get("ValueSet/$validate-code", params={
        "url": VITAL_SIGNS, "system": LOINC, "code": "8462-4"})
    assert _values(r.json())["result"] is True
    r = await mongo_client.get("CodeSystem/$subsumes", params={
        "system": VER_STATUS, "codeA": "unconfirmed", "codeB": "provisional"})
    assert _values(r.json())["outcome"] == "subsumes"
    r = await mongo_client.get("CodeSystem/$subsumes", params={
        "system": VER_STATUS, "codeA": "provisional", "codeB": "confirmed"})
    assert _values(r.json())["outcome"] == "not-subsumed"


async def test_expand_with_type_ahead(mongo_client: httpx.AsyncClient) -> None:
    r = await mongo_client.get("ValueSet/$expand", params={"url": VITAL_SIGNS})
    assert r.status_code == 200, r.text
    expansion = r.json()["expansion"]
    assert expansion["total"] == 13  # the 13 LOINC codes of the R4 value set
    r = await mongo_client.get("ValueSet/$expand", params={
        "url": f"{LOINC}?fhir_vs", "filter": "blood pressure syst", "count": "5"})
    found = r.json()["expansion"].get("contains", [])
    assert found and found[0]["code"] == "8480-6", found
    r = await mongo_client.get("ValueSet/$expand", params={
        "url": f"{LOINC}?fhir_vs", "filter": "葡萄糖", "displayLanguage": "zh-CN"})
    contains = r.json()["expansion"]["contains"]
    assert "2345-7" in {c["code"] for c in contains}
    assert all("葡萄糖" in c["display"] for c in contains), contains


async def test_below_and_above_on_shipped_hierarchy(mongo_client: httpx.AsyncClient) -> None:
    async def ids(params: dict[str, str]) -> set[str]:
        r = await mongo_client.get("Condition", params=params)
        assert r.status_code == 200, r.text
        return {e["resource"]["id"] for e in r.json().get("entry", [])}

    # condition-ver-status: provisional and differential are below unconfirmed
    assert await ids({"verification-status:below": f"{VER_STATUS}|unconfirmed"}) == {
        "unc", "prov", "diff"}
    assert await ids({"verification-status:above": f"{VER_STATUS}|differential"}) == {
        "unc", "diff"}


async def test_in_and_not_in_a_shipped_value_set(mongo_client: httpx.AsyncClient) -> None:
    async def ids(params: dict[str, str]) -> set[str]:
        r = await mongo_client.get("Observation", params=params)
        assert r.status_code == 200, r.text
        return {e["resource"]["id"] for e in r.json().get("entry", [])}

    assert await ids({"code:in": VITAL_SIGNS}) == {"sys", "dia"}
    assert await ids({"code:not-in": VITAL_SIGNS}) == {"glu"}


async def test_plain_token_search_still_works(mongo_client: httpx.AsyncClient) -> None:
    r = await mongo_client.get("Observation?code=http://loinc.org|2345-7")
    assert r.status_code == 200 and r.json()["total"] == 1


async def test_documents_carry_the_tenant(mongo_store: MongoStore) -> None:
    """Each term_* document names its tenant; another tenant sees nothing of a load."""
    from terminology.model import CodeSystemHeader, Concept

    concepts = concept_store(mongo_store)
    url = "http://example.org/fhir/CodeSystem/lab"
    await concepts.load_code_system(Context(tenant="a"), CodeSystemHeader(url, None, "Lab"),
                                    [Concept("X", "x")], keep_resource=False)  # fmt: skip
    assert await concepts.system(Context(tenant="b"), url) is None
    assert await concepts.system(Context(tenant="a"), url) is not None
    for name in ("term_systems", "term_concepts"):
        docs = await mongo_store.db[name].find({}).to_list(None)
        assert docs and all(d["tenant"] == "a" for d in docs), name


async def test_a_failed_swap_keeps_the_previous_load(
    mongo_store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_server.errors import FHIRError
    from terminology.content import loinc_subset

    ctx = Context()
    concepts = concept_store(mongo_store)
    header, rows = loinc_subset()
    rows = list(rows)
    await concepts.load_code_system(ctx, header, rows[:5], keep_resource=False)

    def conflict(_ctx: Context) -> Any:  # a concurrent load's swap won the write
        raise FHIRError.simple(409, "conflict", "write conflict")

    monkeypatch.setattr(mongo_store, "transaction", conflict)
    with pytest.raises(FHIRError):
        await concepts.load_code_system(ctx, header, rows, keep_resource=False)
    system = await concepts.system(ctx, LOINC)
    assert system is not None and system.count == 5
    assert await mongo_store.db["term_concepts"].count_documents({}) == 5
    assert await mongo_store.db["term_systems"].count_documents({}) == 1


async def test_standalone_server_refuses_loads_clearly() -> None:
    """Loading (here the lazy load of the shipped LOINC subset) is a write: a standalone
    server, which has no transactions, answers 501 naming the replica set, not a 500."""
    store = await MongoStore.open("mongodb://mongomock/",
                                  client=AsyncMockClient(replica_set=False))  # fmt: skip
    try:
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://t/fhir/") as c:
            r = await c.get("CodeSystem/$lookup", params={"system": LOINC, "code": "2345-7"})
        assert r.status_code == 501, r.text
        assert "replica set" in r.json()["issue"][0]["diagnostics"]
        assert await store.db["term_concepts"].count_documents({}) == 0
    finally:
        await store.close()


async def test_concept_store_answers_as_sqlite(tmp_path: Any) -> None:
    """Differential check on real content (ICD-10-CM's diabetes block E10, E11 and its
    chapter/block rows): lookups, hierarchy, subsumption and every filter operator give
    the same answers on MongoDB (mongomock) as on SQLite."""
    from storage_backends import close_backend, open_backend

    from terminology.content import icd10cm
    from terminology.store import Filter

    header, rows = icd10cm()
    block = [c for c in rows if c.code in ("4", "E08-E13") or c.code[:3] in ("E10", "E11")]
    filters = [
        [], [Filter("concept", "is-a", "E11")], [Filter("concept", "descendent-of", "E11.2")],
        [Filter("concept", "is-not-a", "E10")], [Filter("concept", "generalizes", "E11.21")],
        [Filter("code", "regex", "E1[01]\\.6.*")], [Filter("code", "in", "E11.9,E10.9,X")],
        [Filter("code", "not-in", "E11.9,E10.9")], [Filter("notSelectable", "=", "true")],
        [Filter("notSelectable", "exists", "false")],
        [Filter("display", "=", "Type 2 diabetes mellitus without complications")],
        [Filter("concept", "is-a", "E11"), Filter("display", "regex", ".*kidney.*")],
    ]
    ctx = Context()
    answers = []
    for kind in ("sqlite", "mongomock"):
        store, token = await open_backend(kind, tmp_path)
        try:
            concepts = concept_store(store)
            await concepts.load_code_system(ctx, header, block, keep_resource=False)
            system = await concepts.system(ctx, header.url)
            assert system is not None
            ids = await concepts.codes_to_ids(ctx, system, [c.code for c in block])
            order = {cid: code for code, cid in ids.items()}
            seen: list[Any] = [system.count, system.content, system.hierarchy_meaning]
            for code in ("E11", "E11.2", "E11.21", "E08-E13", "nope"):
                seen.append(await concepts.concept(ctx, system, code))
                seen.append(sorted(await concepts.descendants(ctx, system, code)))
                seen.append(sorted(await concepts.ancestors(ctx, system, code)))
            for a, b in (("E11", "E11.21"), ("E11.21", "E11"), ("E10", "E11.9"), ("E11", "E11")):
                seen.append(await concepts.subsumes(ctx, system, a, b))
            for f in filters:
                seen.append([order[cid] for cid in await concepts.select(ctx, system, f)])
            with pytest.raises(TerminologyError):
                await concepts.select(ctx, system, [Filter("colour", "=", "red")])
            answers.append(seen)
        finally:
            await close_backend(store, token)
    assert answers[0] == answers[1]
    assert answers[0][3].concept.display == "Type 2 diabetes mellitus"  # E11, real content
    assert "E11.21" in answers[0][4]  # a descendant of E11


# -- against a real server's behaviour (review-mongo #13) -------------------------------


async def test_an_expand_filter_with_a_nul_character_is_no_server_error(
    mongo_client: httpx.AsyncClient,
) -> None:
    # MongoDB refuses a regular expression with an embedded NUL byte (the facade does
    # too): the filter's text goes into patterns escaped, \x00
    for text in ("blood\u0000pressure", "\u0000", "syst\u0000"):
        r = await mongo_client.get("ValueSet/$expand", params={"url": VITAL_SIGNS,
                                                               "filter": text})
        assert r.status_code < 500, r.text
        if r.status_code == 200:  # no display holds a NUL: nothing, or token matches only
            for concept in r.json()["expansion"].get("contains", []):
                assert "\u0000" not in concept["display"]


async def test_a_terminology_outage_is_503(
    mongo_store: MongoStore, mongo_client: httpx.AsyncClient
) -> None:
    from pymongo.errors import OperationFailure

    from fhir_server.errors import FHIRError

    # the concept store's own calls (not only the resource store's) map PyMongo errors
    concepts = concept_store(mongo_store)
    for method, args in (("systems", ()), ("expansion", ("vs-key",)), ("sync_mark", ())):
        mongo_store.client.fail_next(OperationFailure("no primary", 133, {}))
        with pytest.raises(FHIRError) as refused:
            await getattr(concepts, method)(Context(), *args)
        assert refused.value.status == 503, method

    mongo_store.client.fail_next(OperationFailure("no primary", 133,
                                                  {"codeName": "FailedToSatisfyReadPreference"}))
    r = await mongo_client.get("CodeSystem/$lookup", params={"system": LOINC, "code": "2345-7"})
    assert r.status_code == 503, r.text
    assert r.json()["issue"][0]["code"] == "transient"
    mongo_store.client.down = True
    r = await mongo_client.get("ValueSet/$expand", params={"url": VITAL_SIGNS})
    assert r.status_code == 503, r.text
    mongo_store.client.down = False
    r = await mongo_client.get("CodeSystem/$lookup", params={"system": LOINC, "code": "2345-7"})
    assert r.status_code == 200, r.text
