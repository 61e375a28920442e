"""The storage contract (fhir_server/storage/base.py) that every backend passes: SQLite
on a real file, MongoDB through mongomock, and a real MongoDB when
FHIR_FUSION_TEST_MONGODB is set (see tests/storage_backends.py for what mongomock
cannot check)."""

from __future__ import annotations

import asyncio
import hashlib
from decimal import Decimal
from typing import Any

import pytest

from storage_backends import backend  # noqa: F401 - the fixture

from fhir_server import operations
from fhir_server.errors import FHIRError
from fhir_server.storage.base import Context

pytestmark = pytest.mark.anyio

CTX = Context()

GLUCOSE: dict[str, Any] = {
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


def patient(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Chalmers"}], **fields}


async def create(store: Any, resource: dict[str, Any], resource_id: str | None = None) -> Any:
    async with store.transaction(CTX) as txn:
        return (await txn.create(resource, resource_id)).stored


async def update(store: Any, resource: dict[str, Any], if_match: int | None = None) -> Any:
    async with store.transaction(CTX) as txn:
        return await txn.update(resource, if_match)


async def test_create_assigns_id_and_version_and_keeps_decimal_digits(backend: Any) -> None:
    stored = await create(backend, GLUCOSE)
    assert stored.version == 1 and stored.method == "POST" and not stored.deleted
    assert len(stored.id) == 36  # a UUID
    assert b'"value":5.50' in stored.body
    read = await backend.read(CTX, "Observation", stored.id)
    assert read.body == stored.body
    assert read.resource["meta"] == {"versionId": "1", "lastUpdated": stored.last_updated}
    assert read.resource["valueQuantity"]["value"] == Decimal("5.50")


async def test_update_makes_versions_and_unchanged_content_writes_nothing(backend: Any) -> None:
    first = await create(backend, patient(), "p1")
    second = await update(backend, patient(id="p1", gender="female"))
    assert second.outcome == "updated" and second.stored.version == 2
    assert second.stored.last_updated > first.last_updated
    # the same content again, even with other server meta, is not a new version
    same = await update(backend, patient(id="p1", gender="female",
                                         meta={"versionId": "9", "lastUpdated": "2020-01-01"}))
    assert same.outcome == "unchanged" and same.stored.version == 2
    versions, total = await backend.history(CTX, "Patient", "p1")
    assert total == 2 and [v.version for v in versions] == [2, 1]
    old = await backend.vread(CTX, "Patient", "p1", 1)
    assert old.resource.get("gender") is None and old.method == "POST"
    assert await backend.vread(CTX, "Patient", "p1", 3) is None


async def test_if_match_mismatch_is_412_and_writes_nothing(backend: Any) -> None:
    await create(backend, patient(), "p1")
    with pytest.raises(FHIRError) as caught:
        await update(backend, patient(id="p1", gender="male"), if_match=7)
    assert caught.value.status == 412
    assert "at version 1, not 7" in str(caught.value)
    with pytest.raises(FHIRError) as unknown:
        await update(backend, patient(id="nobody"), if_match=1)
    assert unknown.value.status == 412
    assert (await backend.read(CTX, "Patient", "p1")).version == 1
    assert await backend.read(CTX, "Patient", "nobody") is None


async def test_update_as_create_delete_and_create_again(backend: Any) -> None:
    made = await update(backend, patient(id="p9"))
    assert made.outcome == "created" and made.stored.version == 1
    async with backend.transaction(CTX) as txn:
        gone = await txn.delete("Patient", "p9")
    assert gone.outcome == "deleted" and gone.stored.version == 2 and gone.stored.deleted
    marker = await backend.read(CTX, "Patient", "p9")
    assert marker.deleted and marker.body is None and marker.method == "DELETE"
    async with backend.transaction(CTX) as txn:
        again = await txn.delete("Patient", "p9")
        nothing = await txn.delete("Patient", "never")
    assert again.outcome == "unchanged" and again.stored.version == 2
    assert nothing.outcome == "not-found"
    back = await update(backend, patient(id="p9", gender="other"))
    assert back.outcome == "created" and back.stored.version == 3
    versions, total = await backend.history(CTX, "Patient", "p9")
    assert total == 3
    assert [(v.version, v.deleted, v.method) for v in versions] == [
        (3, False, "PUT"), (2, True, "DELETE"), (1, False, "PUT")]


async def test_create_with_an_existing_id_conflicts(backend: Any) -> None:
    await create(backend, patient(), "p1")
    with pytest.raises(FHIRError) as caught:
        await create(backend, patient(), "p1")
    assert caught.value.status == 409
    assert (await backend.history(CTX, "Patient", "p1"))[1] == 1


async def test_failed_transaction_leaves_nothing(backend: Any) -> None:
    await create(backend, patient(), "kept")
    with pytest.raises(RuntimeError, match="entry 3 failed"):
        async with backend.transaction(CTX) as txn:
            await txn.create(patient(), "p-new")
            await txn.update(patient(id="kept", gender="male"))
            await txn.delete("Patient", "kept")
            await txn.record_input("hl7v2", b"MSH|^~\\&|", "stored")
            raise RuntimeError("entry 3 failed")
    assert await backend.read(CTX, "Patient", "p-new") is None
    kept = await backend.read(CTX, "Patient", "kept")
    assert kept.version == 1 and not kept.deleted
    assert (await backend.history(CTX))[1] == 1
    assert await backend.list_inputs(CTX) == []


async def test_reads_inside_a_transaction_see_its_writes(backend: Any) -> None:
    async with backend.transaction(CTX) as txn:
        await txn.create(patient(), "p1")
        seen = await txn.read("Patient", "p1")
        assert seen is not None and seen.version == 1
        await txn.update(patient(id="p1", gender="female"))
        assert (await txn.read("Patient", "p1")).version == 2


async def test_history_since_count_and_offset(backend: Any) -> None:
    first = await create(backend, patient(), "a")
    await create(backend, GLUCOSE, "g")
    third = await update(backend, patient(id="a", gender="male"))
    everything, total = await backend.history(CTX)
    assert total == 3
    assert [(v.resource_type, v.id, v.version) for v in everything] == [
        ("Patient", "a", 2), ("Observation", "g", 1), ("Patient", "a", 1)]
    page, total = await backend.history(CTX, count=1, offset=1)
    assert total == 3 and [(v.id, v.version) for v in page] == [("g", 1)]
    # _since is inclusive and compared as an instant, whatever its zone
    since, total = await backend.history(CTX, since=third.stored.last_updated)
    assert total == 1 and since[0].version == 2
    assert (await backend.history(CTX, "Patient", since=first.last_updated))[1] == 2
    with pytest.raises(FHIRError) as caught:
        await backend.history(CTX, since="2026-01-01T10:00:00")  # no time zone
    assert caught.value.status == 400


async def test_tenants_do_not_see_each_other(backend: Any) -> None:
    other = Context(tenant="clinic-b")
    await create(backend, patient(), "shared-id")
    async with backend.transaction(other) as txn:
        made = await txn.create(patient(gender="female"), "shared-id")
    assert made.outcome == "created" and made.stored.version == 1
    assert (await backend.read(CTX, "Patient", "shared-id")).resource.get("gender") is None
    assert (await backend.read(other, "Patient", "shared-id")).resource["gender"] == "female"
    assert (await backend.history(other))[1] == 1
    async with backend.transaction(other) as txn:
        await txn.record_input("hl7v2", b"MSH|b", "stored")
    assert await backend.list_inputs(CTX) == []
    assert await backend.find_input(CTX, "hl7v2", hashlib.sha256(b"MSH|b").hexdigest()) is None


async def test_raw_inputs_are_kept_found_by_hash_and_settled(backend: Any) -> None:
    content = b"MSH|^~\\&|LAB|HOSP|||20260101||ORU^R01|1|P|2.5"
    digest = hashlib.sha256(content).hexdigest()
    async with backend.transaction(CTX) as txn:
        rejected = await txn.record_input("hl7v2", content, "rejected", reason="no PID")
    kept = await backend.get_input(CTX, rejected)
    assert (kept.status, kept.reason, kept.content, kept.content_hash) == (
        "rejected", "no PID", content, digest)
    assert await backend.find_input(CTX, "hl7v2", digest) is None
    assert (await backend.find_input(CTX, "hl7v2", digest, "rejected")).id == rejected
    async with backend.transaction(CTX) as txn:
        same = await txn.record_input("hl7v2", content, "stored", result={"n": Decimal("1.0")},
                                      input_id=rejected)
        later = await txn.record_input("csv", b"a,b", "stored")
    assert same == rejected and later > rejected
    settled = await backend.find_input(CTX, "hl7v2", digest)
    assert settled.id == rejected and settled.result == {"n": Decimal("1.0")}
    assert [i.id for i in await backend.list_inputs(CTX)] == [later, rejected]
    assert [i.id for i in await backend.list_inputs(CTX, feed="hl7v2")] == [rejected]
    assert [i.id for i in await backend.list_inputs(CTX, before=later)] == [rejected]
    with pytest.raises(FHIRError) as caught:
        async with backend.transaction(CTX) as txn:
            await txn.record_input("hl7v2", content, "stored", input_id=later + 100)
    assert caught.value.status == 404


async def test_feed_counters_add_up_with_their_transactions(backend: Any) -> None:
    async with backend.transaction(CTX) as txn:
        await txn.count_feed("hl7v2", {"received": 1, "stored": 1})
    async with backend.transaction(CTX) as txn:
        await txn.count_feed("hl7v2", {"received": 1, "rejected": 1})
        await txn.record_input("hl7v2", b"bad", "rejected", reason="no MSH")
    with pytest.raises(RuntimeError):
        async with backend.transaction(CTX) as txn:
            await txn.count_feed("hl7v2", {"received": 5})
            raise RuntimeError("rolled back")
    assert await backend.feed_counters(CTX) == {
        "hl7v2": {"received": 2, "stored": 1, "rejected": 1, "pending": 1}}


async def test_batch_keeps_a_failed_transaction_apart(backend: Any) -> None:
    async with backend.batch(CTX):
        async with backend.transaction(CTX) as txn:
            await txn.create(patient(), "ok")
        with pytest.raises(FHIRError):
            async with backend.transaction(CTX) as txn:
                await txn.create(patient(), "bad")
                await txn.create(patient(), "ok")  # 409
        assert (await backend.read(CTX, "Patient", "ok")).version == 1
    assert await backend.read(CTX, "Patient", "bad") is None
    assert (await backend.read(CTX, "Patient", "ok")).version == 1


async def test_claims_on_the_same_criteria_wait_for_each_other(backend: Any) -> None:
    """Transaction.claim: a second transaction claiming criteria an open one holds goes on
    only after the first has committed, so it sees the first one's resource."""
    order: list[str] = []
    first_claimed = asyncio.Event()

    async def first() -> None:
        async with backend.transaction(CTX) as txn:
            await txn.claim("Patient", "Patient?identifier=urn%3Amrn%7C7")
            first_claimed.set()
            await asyncio.sleep(0.05)
            await txn.create(patient(), "mrn-7")
            order.append("first committed")

    async def second() -> None:
        await first_claimed.wait()
        async with backend.transaction(CTX) as txn:
            await txn.claim("Patient", "Patient?identifier=urn%3Amrn%7C7")
            seen = await txn.read("Patient", "mrn-7")
            order.append("second sees it" if seen is not None else "second sees nothing")

    await asyncio.gather(first(), second())
    assert order == ["first committed", "second sees it"]


async def test_conditional_create_finds_instead_of_creating(backend: Any) -> None:
    body = patient(identifier=[{"system": "urn:mrn", "value": "42"}])
    async with backend.transaction(CTX) as txn:
        made = await operations.create(txn, body, "Patient", if_none_exist="identifier=urn:mrn|42")
    async with backend.transaction(CTX) as txn:
        found = await operations.create(
            txn, body, "Patient", if_none_exist="Patient?identifier=urn%3Amrn%7C42")
    assert (made.status, found.status) == (201, 200)
    assert found.stored.id == made.stored.id


async def test_fifty_parallel_conditional_creates_make_one_resource(backend: Any) -> None:
    body = patient(identifier=[{"system": "urn:mrn", "value": "50"}])

    async def attempt() -> int:
        async with backend.transaction(CTX) as txn:
            result = await operations.create(
                txn, body, "Patient", if_none_exist="identifier=urn:mrn|50")
        return result.status

    statuses = await asyncio.gather(*(attempt() for _ in range(50)))
    assert sorted(statuses) == [200] * 49 + [201]
    history, total = await backend.history(CTX, "Patient")
    assert total == 1


# -- search: one case of every parameter type, same answers on every backend ----------

SEARCHED: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1974-12-25",
     "identifier": [{"system": "urn:mrn", "value": "1"}],
     "name": [{"family": "Chalmers", "given": ["Peter"]}]},
    {"resourceType": "Patient", "id": "p2", "gender": "male", "birthDate": "1990-01-01",
     "identifier": [{"system": "urn:mrn", "value": "2"}],
     "name": [{"family": "Müller", "given": ["José"]}]},
    {**GLUCOSE, "id": "o1", "subject": {"reference": "Patient/p1"},
     "effectiveDateTime": "2026-03-01T10:00:00Z"},
    {**GLUCOSE, "id": "o2", "subject": {"reference": "Patient/p2"},
     "effectiveDateTime": "2026-03-02T10:00:00Z",
     "valueQuantity": {**GLUCOSE["valueQuantity"], "value": Decimal("4.1")}},
    {"resourceType": "RiskAssessment", "id": "r1", "status": "final",
     "subject": {"reference": "Patient/p1"},
     "prediction": [{"probabilityDecimal": Decimal("0.8")}]},
    {"resourceType": "ValueSet", "id": "vs1", "status": "active",
     "url": "http://example.org/fhir/ValueSet/glucose"},
]

SEARCH_CASES = [
    pytest.param("Patient", [("identifier", "urn:mrn|1")], ["p1"], id="token"),
    pytest.param("Patient", [("gender", "male")], ["p2"], id="token-code"),
    pytest.param("Patient", [("family", "mul")], ["p2"], id="string-folded-prefix"),
    pytest.param("Patient", [("name:exact", "Chalmers")], ["p1"], id="string-exact"),
    pytest.param("Patient", [("birthdate", "1974-12")], ["p1"], id="date-month"),
    pytest.param("Observation", [("date", "ge2026-03-02")], ["o2"], id="date-prefix"),
    pytest.param("Observation", [("subject", "Patient/p1")], ["o1"], id="reference"),
    pytest.param("Observation", [("value-quantity", "gt5|http://unitsofmeasure.org|mmol/L")],
                 ["o1"], id="quantity"),
    pytest.param("RiskAssessment", [("probability", "gt0.5")], ["r1"], id="number"),
    pytest.param("ValueSet", [("url", "http://example.org/fhir/ValueSet/glucose")], ["vs1"],
                 id="uri"),
    pytest.param("Observation", [("code-value-quantity", "http://loinc.org|2345-7$lt5")],
                 ["o2"], id="composite"),
    pytest.param("Patient", [("_id", "p2")], ["p2"], id="_id"),
    pytest.param("Observation", [("subject:Patient.gender", "female")], ["o1"], id="chain"),
    pytest.param("Patient", [("_has:Observation:subject:date", "lt2026-03-02")], ["p1"],
                 id="_has"),
    pytest.param("Patient", [("_sort", "-birthdate")], ["p2", "p1"], id="_sort"),
]


@pytest.mark.parametrize(("resource_type", "params", "expected"), SEARCH_CASES)
async def test_search_answers_the_same_on_every_backend(
    backend: Any, resource_type: str, params: list[tuple[str, str]], expected: list[str]
) -> None:
    from search.query import parse_search

    async with backend.transaction(CTX) as txn:
        for resource in SEARCHED:
            await txn.update(resource)
    page = await backend.search(CTX, parse_search(resource_type, params))
    assert [r.id for r in page.resources] == expected
    assert page.total == len(expected)


async def test_search_skips_deleted_resources_and_pages_by_cursor(backend: Any) -> None:
    from search.query import parse_search

    async with backend.transaction(CTX) as txn:
        for n in range(5):
            await txn.update(patient(id=f"pg{n}", identifier=[{"system": "urn:pg", "value": "x"}]))
        await txn.delete("Patient", "pg2")
    query = parse_search("Patient", [("identifier", "urn:pg|x"), ("_count", "2")])
    seen: list[str] = []
    page = await backend.search(CTX, query)
    assert page.total == 4
    while True:
        seen += [r.id for r in page.resources]
        if page.next_cursor is None:
            break
        page = await backend.search(CTX, query.after(page.next_cursor))
    assert sorted(seen) == ["pg0", "pg1", "pg3", "pg4"] and len(seen) == 4


async def test_writes_are_invisible_to_others_until_commit(backend: Any) -> None:
    """Isolation (on mongomock as the facade emulates it, see tests/mongo_async.py)."""
    async with backend.transaction(CTX) as txn:
        await txn.create(patient(), "hidden")
        assert await backend.read(CTX, "Patient", "hidden") is None
        assert (await backend.history(CTX))[1] == 0
    assert (await backend.read(CTX, "Patient", "hidden")).version == 1


async def test_a_count_of_zero_gives_no_rows_but_the_total(backend: Any) -> None:
    await create(backend, patient(), "p1")
    async with backend.transaction(CTX) as txn:
        await txn.record_input("hl7v2", b"MSH|z", "stored")
    assert await backend.history(CTX, count=0) == ([], 1)
    assert await backend.list_inputs(CTX, limit=0) == []


BIRTHSEX = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"


async def test_a_search_parameter_written_is_defined_and_a_bad_one_refused(
    backend: Any,
) -> None:
    """A stored SearchParameter defines its parameter at once (pending: a search on it
    asks for $reindex, which only the SQLite store has so far); one that cannot be
    indexed is a 400 and is not stored."""
    from search import custom
    from search.query import parse_search

    definition = {
        "resourceType": "SearchParameter", "id": "patient-birthsex", "status": "active",
        "url": "http://example.org/fhir/SearchParameter/patient-birthsex", "name": "birthsex",
        "description": "Birth sex", "code": "birthsex", "base": ["Patient"], "type": "token",
        "expression": f"Patient.extension.where(url='{BIRTHSEX}').value",
    }
    try:
        await update(backend, definition)
        await update(backend, patient(id="bs1", extension=[{"url": BIRTHSEX, "valueCode": "F"}]))
        assert "birthsex" in custom.REGISTRY.of_type("Patient")
        with pytest.raises(FHIRError, match="'birthsex' is not yet indexed; run \\$reindex"):
            await backend.search(CTX, parse_search("Patient", [("birthsex", "F")]))
        with pytest.raises(FHIRError) as caught:
            await update(backend, {**definition, "id": "broken", "code": "broken",
                                   "expression": "Patient.extension.where(url='x'"})
        assert caught.value.status == 400
        assert await backend.read(CTX, "SearchParameter", "broken") is None
    finally:
        custom.REGISTRY.replace_all([])


async def test_conditional_update_and_delete_by_criteria(backend: Any) -> None:
    mrn = [{"system": "urn:mrn", "value": "77"}]
    async with backend.transaction(CTX) as txn:
        made = await operations.conditional_update(
            txn, patient(identifier=mrn), "Patient", "identifier=urn:mrn|77")
    async with backend.transaction(CTX) as txn:
        changed = await operations.conditional_update(
            txn, patient(identifier=mrn, gender="male"), "Patient", "identifier=urn:mrn|77")
    assert (made.status, changed.status) == (201, 200)
    assert changed.stored.id == made.stored.id and changed.stored.version == 2
    async with backend.transaction(CTX) as txn:
        await txn.create(patient(identifier=mrn), "twin")
    with pytest.raises(FHIRError) as caught:
        async with backend.transaction(CTX) as txn:
            await operations.conditional_delete(txn, "Patient", "identifier=urn:mrn|77")
    assert caught.value.status == 412
    async with backend.transaction(CTX) as txn:
        await txn.delete("Patient", "twin")
    async with backend.transaction(CTX) as txn:
        gone = await operations.conditional_delete(txn, "Patient", "identifier=urn:mrn|77")
    assert gone.stored.deleted and gone.stored.id == made.stored.id


# -- isolation: an open transaction is invisible to other readers until it commits ------
# The transaction stops between its writes (storage_backends.PausingStore) or before its
# commit (process_bundle's before_commit) while another task reads, searches and lists
# history. On SQLite the readers use their own WAL connection; on mongomock the facade
# keeps a transaction's writes in private copies until commit (tests/mongo_async.py).

KEPT_MRN = [{"system": "urn:mrn", "value": "iso-1"}]


def _isolation_bundle() -> dict[str, Any]:
    def entry(method: str, url: str, resource: dict[str, Any] | None = None) -> dict[str, Any]:
        made: dict[str, Any] = {"request": {"method": method, "url": url}}
        if resource is not None:
            made["resource"] = resource
        return made

    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("PUT", "Patient/iso-kept", patient(id="iso-kept", identifier=KEPT_MRN,
                                                 gender="male")),
        entry("DELETE", "Observation/iso-gone"),
        entry("PUT", "Patient/iso-new", patient(id="iso-new", gender="male")),
        entry("POST", "Observation", {**GLUCOSE, "subject": {"reference": "Patient/iso-new"}}),
    ]}


async def _seed_isolation(store: Any) -> None:
    async with store.transaction(CTX) as txn:
        await txn.create(patient(identifier=KEPT_MRN), "iso-kept")
        await txn.create({**GLUCOSE, "subject": {"reference": "Patient/iso-kept"}}, "iso-gone")


async def _seen(store: Any) -> dict[str, Any]:
    """What a reader outside the transaction finds."""
    from search.query import parse_search

    async def found(resource_type: str, params: list[tuple[str, str]]) -> list[str]:
        page = await store.search(CTX, parse_search(resource_type, params))
        return sorted(f"{r.id}/{r.version}" for r in page.resources)

    kept = await store.read(CTX, "Patient", "iso-kept")
    gone = await store.read(CTX, "Observation", "iso-gone")
    return {
        "kept": (kept.version, kept.resource.get("gender")),
        "gone": (gone.version, gone.deleted),
        "new": await store.read(CTX, "Patient", "iso-new"),
        "male": await found("Patient", [("gender", "male")]),
        "by-mrn": await found("Patient", [("identifier", "urn:mrn|iso-1")]),
        "observations": await found("Observation", [("code", "http://loinc.org|2345-7")]),
        "history": (await store.history(CTX))[1],
    }


BEFORE_BUNDLE = {
    "kept": (1, None), "gone": (1, False), "new": None, "male": [],
    "by-mrn": ["iso-kept/1"], "observations": ["iso-gone/1"], "history": 2,
}


async def test_an_open_bundle_transaction_is_invisible_until_it_commits(backend: Any) -> None:
    from storage_backends import PausingStore

    from fhir_server.bundles import process_bundle

    await _seed_isolation(backend)
    assert await _seen(backend) == BEFORE_BUNDLE
    paused = PausingStore(backend, after=2)  # two of its four writes done
    at_commit, release = asyncio.Event(), asyncio.Event()
    seen: dict[str, Any] = {}

    async def before_commit(txn: Any) -> None:
        at_commit.set()
        await release.wait()

    async def reader() -> None:
        await paused.paused.wait()
        seen["between writes"] = await _seen(backend)
        paused.resume.set()
        await at_commit.wait()
        seen["before commit"] = await _seen(backend)
        release.set()

    response, _ = await asyncio.gather(
        process_bundle(paused, CTX, _isolation_bundle(), before_commit=before_commit),
        reader(),
    )
    assert [e["response"]["status"][:3] for e in response["entry"]] == [
        "200", "204", "201", "201"]
    assert seen == {"between writes": BEFORE_BUNDLE, "before commit": BEFORE_BUNDLE}
    after = await _seen(backend)
    assert after["new"] is not None and after["new"].version == 1
    (observation,) = after["observations"]
    assert observation.endswith("/1") and observation != "iso-gone/1"
    assert {k: v for k, v in after.items() if k not in ("new", "observations")} == {
        "kept": (2, "male"), "gone": (2, True), "male": ["iso-kept/2", "iso-new/1"],
        "by-mrn": ["iso-kept/2"], "history": 6,
    }


async def test_an_open_conditional_update_is_invisible_until_it_commits(
    backend: Any,
) -> None:
    from search.query import parse_search

    mrn = [{"system": "urn:mrn", "value": "78"}]
    await create(backend, patient(identifier=mrn), "cu")

    async def outside() -> tuple[Any, ...]:
        by_mrn = await backend.search(CTX, parse_search("Patient", [("identifier", "urn:mrn|78")]))
        males = await backend.search(CTX, parse_search("Patient", [("gender", "male")]))
        current = await backend.read(CTX, "Patient", "cu")
        return (current.version, current.resource.get("gender"),
                [(r.id, r.version) for r in by_mrn.resources], males.total,
                await backend.vread(CTX, "Patient", "cu", 2) is None,
                (await backend.history(CTX, "Patient", "cu"))[1])

    async with backend.transaction(CTX) as txn:
        changed = await operations.conditional_update(
            txn, patient(identifier=mrn, gender="male"), "Patient", "identifier=urn:mrn|78")
        assert (changed.status, changed.stored.id, changed.stored.version) == (200, "cu", 2)
        inside = await txn.read("Patient", "cu")
        assert (inside.version, inside.resource["gender"]) == (2, "male")
        # another task, as another request would be
        assert await asyncio.create_task(outside()) == (1, None, [("cu", 1)], 0, True, 1)
    assert await outside() == (2, "male", [("cu", 2)], 1, False, 2)


async def test_an_outage_mid_transaction_is_503_leaves_nothing_and_passes(
    backend: Any,
) -> None:
    """The database goes away between two writes of a Bundle (the facade's fail_after):
    a 503 OperationOutcome; nothing of the Bundle is visible, before or after the
    outage; once the database is back the same Bundle goes through."""
    from storage_backends import PausingStore, emulated_outage

    from fhir_server.bundles import process_bundle

    outage = emulated_outage(backend)
    if outage is None:
        pytest.skip("only the mongomock facade can take the database away mid-request here")
    await _seed_isolation(backend)
    paused = PausingStore(backend, after=2)
    seen: list[dict[str, Any]] = []

    async def reader() -> None:
        await paused.paused.wait()
        seen.append(await _seen(backend))
        outage.fail_after(0)  # the Bundle's next call finds the server gone
        paused.resume.set()

    watching = asyncio.create_task(reader())
    with pytest.raises(FHIRError) as caught:
        await process_bundle(paused, CTX, _isolation_bundle())
    await watching
    assert caught.value.status == 503 and outage.down
    outcome = caught.value.outcome()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"
    assert "MongoDB database is unavailable" in outcome["issue"][0]["diagnostics"]
    outage.down = False
    assert seen == [BEFORE_BUNDLE]
    assert await _seen(backend) == BEFORE_BUNDLE
    await process_bundle(backend, CTX, _isolation_bundle())
    assert (await _seen(backend))["kept"] == (2, "male")


async def test_a_versioned_update_racing_an_open_transaction_is_refused(backend: Any) -> None:
    """Two writers of one resource: the second, If-Match the version both started from,
    while the first is open. SQLite makes it wait for the first commit (then 412);
    MongoDB refuses it with a write conflict at once (409, first writer wins) or, had it
    come after the commit, with 412. Never a second version 2, never a lost update."""
    await create(backend, patient(), "race")
    first_wrote, first_may_commit = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with backend.transaction(CTX) as txn:
            await txn.update(patient(id="race", gender="male"), if_match=1)
            first_wrote.set()
            await first_may_commit.wait()

    async def second() -> int:
        await first_wrote.wait()
        try:
            await update(backend, patient(id="race", gender="female"), if_match=1)
        except FHIRError as exc:
            return exc.status
        return 200

    racing = asyncio.create_task(second())
    opened = asyncio.create_task(first())
    await first_wrote.wait()
    await asyncio.sleep(0.05)  # let the second writer reach the store (or its lock)
    first_may_commit.set()
    await opened
    assert await racing in (409, 412)
    current = await backend.read(CTX, "Patient", "race")
    assert (current.version, current.resource["gender"]) == (2, "male")
    assert (await backend.history(CTX, "Patient", "race"))[1] == 2
