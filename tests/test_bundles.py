"""Batch and transaction Bundles (R4 http.html#transaction), through process_bundle and
through POST [base]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from rest_examples import patient

from fhir_server import jsonutil
from fhir_server.bundles import process_bundle
from fhir_server.errors import FHIRError
from fhir_server.storage.base import Context, Transaction
from fhir_server.storage.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"

BASE = "http://fhir.test/fhir"
CTX = Context()
PATIENT_URN = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"
ENCOUNTER_URN = "urn:oid:1.2.3.4.5"
MRN = "urn:oid:1.2.36.146.595.217.0.1"
JSON = {"Content-Type": "application/fhir+json"}


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict[str, Any], full_url: str | None = None, **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def request(method: str, url: str, resource: dict[str, Any] | None = None,
            **extra: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"request": {"method": method, "url": url, **extra}}
    if resource is not None:
        entry["resource"] = resource
    return entry


def observation(subject: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3",
                             "display": "Potassium [Moles/volume] in Serum or Plasma"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": jsonutil.loads("4.50"), "unit": "mmol/L"},
        **more,
    }


def mrn_patient(value: str) -> dict[str, Any]:
    resource = patient()
    del resource["id"]
    resource["identifier"] = [{"system": MRN, "value": value}]
    return resource


async def count(store: SQLiteStore, resource_type: str | None = None) -> int:
    _, total = await store.history(CTX, resource_type)
    return total


def new_id(response_entry: dict[str, Any]) -> str:
    return response_entry["response"]["location"].split("/")[1]


# -- transaction ---------------------------------------------------------------------------


async def test_transaction_resolves_urn_uuid_references_in_any_order(store: SQLiteStore) -> None:
    # The Observation comes first and refers to the Patient created after it, also from
    # inside a nested element (Observation.performer) and an extension.
    obs = observation(
        PATIENT_URN,
        performer=[{"reference": PATIENT_URN, "display": "self-reported"}],
        encounter={"reference": ENCOUNTER_URN},
        extension=[{"url": "http://example.org/ext",
                    "valueReference": {"reference": PATIENT_URN}}],
    )
    encounter = {"resourceType": "Encounter", "status": "finished",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                           "code": "AMB"},
                 "subject": {"reference": PATIENT_URN}}
    result = await process_bundle(
        store, CTX,
        bundle("transaction", post(obs), post(mrn_patient("12345"), PATIENT_URN),
               post(encounter, ENCOUNTER_URN)),
        base_url=BASE,
    )

    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created"] * 3
    obs_id, patient_id, encounter_id = (new_id(e) for e in result["entry"])
    assert result["entry"][1]["response"]["location"] == f"Patient/{patient_id}/_history/1"
    assert result["entry"][1]["response"]["etag"] == 'W/"1"'
    assert result["entry"][1]["fullUrl"] == f"{BASE}/Patient/{patient_id}"

    stored = (await store.read(CTX, "Observation", obs_id)).resource
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"
    assert stored["performer"][0] == {"reference": f"Patient/{patient_id}",
                                      "display": "self-reported"}
    assert stored["extension"][0]["valueReference"]["reference"] == f"Patient/{patient_id}"
    assert stored["encounter"]["reference"] == f"Encounter/{encounter_id}"
    assert str(stored["valueQuantity"]["value"]) == "4.50"


async def test_transaction_failure_writes_nothing(store: SQLiteStore) -> None:
    broken = mrn_patient("3")
    broken["birthDate"] = "25 December 1974"

    with pytest.raises(FHIRError) as caught:
        await process_bundle(
            store, CTX,
            bundle("transaction", post(mrn_patient("1"), PATIENT_URN),
                   post(observation(PATIENT_URN)), post(broken)),
        )

    assert caught.value.status == 400
    issue = caught.value.issues[0]
    assert issue.expression == ("Bundle.entry[2].resource.birthDate",)
    assert issue.diagnostics.startswith("Bundle.entry[2]")
    assert await count(store) == 0


async def test_transaction_if_match_failure_rolls_back(store: SQLiteStore) -> None:
    async with store.transaction(CTX) as txn:
        await txn.update({**patient(), "id": "example"})

    with pytest.raises(FHIRError) as caught:
        await process_bundle(
            store, CTX,
            bundle("transaction",
                   post(mrn_patient("new")),
                   request("PUT", "Patient/example", patient(gender="female"), ifMatch='W/"7"')),
        )

    assert caught.value.status == 412
    assert caught.value.issues[0].expression == ("Bundle.entry[1]",)
    assert await count(store, "Patient") == 1
    assert (await store.read(CTX, "Patient", "example")).resource["gender"] == "male"


async def test_transaction_processes_delete_post_put_get_in_that_order(
    store: SQLiteStore,
) -> None:
    async with store.transaction(CTX) as txn:
        old = (await txn.create(mrn_patient("OLD"))).stored
        await txn.update({**patient(), "id": "example"})

    result = await process_bundle(
        store, CTX,
        bundle(
            "transaction",
            request("GET", "Patient?identifier=" + f"{MRN}|NEW"),
            request("PUT", "Patient/example", patient(gender="female")),
            post(mrn_patient("NEW")),
            request("DELETE", f"Patient?identifier={MRN}|OLD"),
        ),
        base_url=BASE,
    )

    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["200 OK", "200 OK", "201 Created", "204 No Content"]
    searchset = result["entry"][0]["resource"]
    assert searchset["type"] == "searchset"
    assert searchset["total"] == 1  # the GET ran after the POST
    assert searchset["entry"][0]["resource"]["id"] == new_id(result["entry"][2])
    assert (await store.read(CTX, "Patient", old.id)).deleted


async def test_transaction_conditional_create_reuses_the_match_for_references(
    store: SQLiteStore,
) -> None:
    async with store.transaction(CTX) as txn:
        existing = (await txn.create(mrn_patient("12345"))).stored

    result = await process_bundle(
        store, CTX,
        bundle("transaction",
               post(mrn_patient("12345"), PATIENT_URN, ifNoneExist=f"identifier={MRN}|12345"),
               post(observation(PATIENT_URN))),
    )

    assert result["entry"][0]["response"]["status"] == "200 OK"
    assert new_id(result["entry"][0]) == existing.id
    obs = (await store.read(CTX, "Observation", new_id(result["entry"][1]))).resource
    assert obs["subject"]["reference"] == f"Patient/{existing.id}"
    assert await count(store, "Patient") == 1


async def test_two_conditional_creates_of_one_patient_fail_the_transaction(
    store: SQLiteStore,
) -> None:
    """R4 http.html#trules: conditional targets that resolve to the same resource are an
    overlap of identities, so the transaction fails (it used to merge them)."""
    criteria = f"identifier={MRN}|777"
    with pytest.raises(FHIRError) as info:
        await process_bundle(
            store, CTX,
            bundle("transaction",
                   post(mrn_patient("777"), "urn:uuid:a", ifNoneExist=criteria),
                   post(mrn_patient("777"), "urn:uuid:b", ifNoneExist=criteria),
                   post(observation("urn:uuid:b"))),
        )
    assert info.value.status == 400
    assert [i.expression for i in info.value.issues] == [
        ("Bundle.entry[0]", "Bundle.entry[1]")]
    assert await count(store) == 0


async def test_two_puts_of_one_resource_fail_the_transaction(store: SQLiteStore) -> None:
    """R4 http.html#trules: more than one entry acting on the same resource SHALL fail,
    and nothing is written."""
    first = {**patient(), "id": "dup", "gender": "male"}
    second = {**patient(), "id": "dup", "gender": "female"}
    with pytest.raises(FHIRError) as info:
        await process_bundle(store, CTX, bundle(
            "transaction",
            request("PUT", "Patient/dup", first),
            post(observation("Patient/dup")),
            request("PUT", "Patient/dup", second)))
    assert info.value.status == 400
    (issue,) = info.value.issues
    assert issue.code == "business-rule"
    assert issue.expression == ("Bundle.entry[0]", "Bundle.entry[2]")
    assert "Entries 0 and 2" in issue.diagnostics
    assert await store.read(CTX, "Patient", "dup") is None
    assert await count(store) == 0


async def test_conditional_put_resolving_to_a_put_by_id_fails(store: SQLiteStore) -> None:
    async with store.transaction(CTX) as txn:
        known = (await txn.create(mrn_patient("4242"))).stored
    with pytest.raises(FHIRError) as info:
        await process_bundle(store, CTX, bundle(
            "transaction",
            request("PUT", f"Patient?identifier={MRN}|4242", mrn_patient("4242")),
            request("PUT", f"Patient/{known.id}", {**mrn_patient("4242"), "id": known.id,
                                                  "gender": "other"}),
            request("DELETE", "Observation/x1"),
            request("PATCH", "Observation/x1", {"resourceType": "Binary"})))
    assert info.value.status == 400
    assert sorted(i.expression for i in info.value.issues) == [
        ("Bundle.entry[0]", "Bundle.entry[1]"), ("Bundle.entry[2]", "Bundle.entry[3]")]
    # the diagnostics name entries and types, never the identifier value the criteria hold
    assert all("4242" not in i.diagnostics for i in info.value.issues)
    assert (await store.read(CTX, "Patient", known.id)).version == 1


async def test_entries_sharing_a_full_url_fail_the_transaction(store: SQLiteStore) -> None:
    with pytest.raises(FHIRError) as info:
        await process_bundle(store, CTX, bundle(
            "transaction",
            post(mrn_patient("1"), PATIENT_URN), post(mrn_patient("2"), PATIENT_URN)))
    assert info.value.status == 400
    assert [i.expression for i in info.value.issues] == [
        ("Bundle.entry[0].fullUrl", "Bundle.entry[1].fullUrl")]
    assert await count(store) == 0


async def test_a_batch_may_write_one_resource_twice(store: SQLiteStore) -> None:
    """The rule is for transactions; batch entries are independent of each other."""
    result = await process_bundle(store, CTX, bundle(
        "batch", request("PUT", "Patient/twice", {**patient(), "id": "twice"}),
        request("PUT", "Patient/twice", {**patient(), "id": "twice", "gender": "other"})))
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created", "200 OK"]


async def test_conditional_references_resolve_by_search(store: SQLiteStore) -> None:
    async with store.transaction(CTX) as txn:
        known = (await txn.create(mrn_patient("12345"))).stored
        await txn.create(mrn_patient("twin"))
        await txn.create(mrn_patient("twin"))

    ok = await process_bundle(
        store, CTX, bundle("transaction", post(observation(f"Patient?identifier={MRN}|12345"))),
    )
    obs = (await store.read(CTX, "Observation", new_id(ok["entry"][0]))).resource
    assert obs["subject"]["reference"] == f"Patient/{known.id}"

    with pytest.raises(FHIRError) as none:
        await process_bundle(store, CTX, bundle(
            "transaction", post(observation(f"Patient?identifier={MRN}|nobody"))))
    assert none.value.status == 400
    with pytest.raises(FHIRError) as many:
        await process_bundle(store, CTX, bundle(
            "transaction", post(observation(f"Patient?identifier={MRN}|twin"))))
    assert many.value.status == 412
    assert many.value.issues[0].code == "multiple-matches"
    assert await count(store, "Observation") == 1


async def test_conditional_update_entry_creates_then_updates(store: SQLiteStore) -> None:
    entry = request("PUT", f"Patient?identifier={MRN}|55", mrn_patient("55"))
    entry["fullUrl"] = PATIENT_URN

    first = await process_bundle(
        store, CTX, bundle("transaction", entry, post(observation(PATIENT_URN))))
    second = await process_bundle(store, CTX, bundle("transaction", entry))

    assert first["entry"][0]["response"]["status"] == "201 Created"
    patient_id = new_id(first["entry"][0])
    obs = (await store.read(CTX, "Observation", new_id(first["entry"][1]))).resource
    assert obs["subject"]["reference"] == f"Patient/{patient_id}"
    assert second["entry"][0]["response"]["status"] == "200 OK"
    assert new_id(second["entry"][0]) == patient_id


async def test_unresolvable_urn_reference_fails_the_transaction(store: SQLiteStore) -> None:
    with pytest.raises(FHIRError) as caught:
        await process_bundle(store, CTX, bundle(
            "transaction", post(observation("urn:uuid:00000000-0000-0000-0000-000000000000"))))
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == ("Bundle.entry[0].resource",)


async def test_before_commit_runs_inside_the_transaction(store: SQLiteStore) -> None:
    seen: list[int] = []

    async def record(txn: Transaction) -> None:
        page = await txn.read("Patient", "example")
        seen.append(page.version if page else 0)
        await txn.record_input("hl7v2", b"MSH|...", "stored")

    await process_bundle(store, CTX, bundle(
        "transaction", request("PUT", "Patient/example", patient())), before_commit=record)

    assert seen == [1]  # it sees the entry's write
    assert len(await store.list_inputs(CTX, feed="hl7v2")) == 1


async def test_failing_before_commit_rolls_everything_back(store: SQLiteStore) -> None:
    async def refuse(txn: Transaction) -> None:
        raise FHIRError.simple(422, "processable", "refused")

    with pytest.raises(FHIRError):
        await process_bundle(store, CTX, bundle(
            "transaction", request("PUT", "Patient/example", patient())), before_commit=refuse)
    assert await store.read(CTX, "Patient", "example") is None


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        pytest.param({"resourceType": "Patient"}, "Bundle", id="not-a-bundle"),
        pytest.param(bundle("collection"), "Bundle.type", id="collection"),
        pytest.param({**bundle("transaction"), "entry": {}}, "Bundle.entry", id="entry-object"),
        pytest.param(bundle("transaction", {"resource": patient()}), "Bundle.entry[0].request",
                     id="no-request"),
        pytest.param(bundle("transaction", request("FETCH", "Patient")),
                     "Bundle.entry[0].request.method", id="bad-method"),
        pytest.param(bundle("transaction", request("POST", "Patient")),
                     "Bundle.entry[0].resource", id="post-without-resource"),
        pytest.param(bundle("transaction", request("PUT", "Patient/", patient())),
                     "Bundle.entry[0].request.url", id="put-without-id"),
        pytest.param(bundle("transaction", request("GET", "Unicorn/1")),
                     "Bundle.entry[0].request.url", id="unknown-type"),
        pytest.param(bundle("transaction", request("PATCH", "Patient/1", patient())),
                     "Bundle.entry[0].request", id="patch"),
    ],
)
async def test_malformed_bundles_are_400(
    store: SQLiteStore, body: dict[str, Any], expression: str
) -> None:
    with pytest.raises(FHIRError) as caught:
        await process_bundle(store, CTX, body)
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == (expression,)


# -- batch ---------------------------------------------------------------------------------


async def test_batch_entries_succeed_or_fail_on_their_own(store: SQLiteStore) -> None:
    broken = mrn_patient("2")
    broken["birthDate"] = "sometime in 1974"

    result = await process_bundle(
        store, CTX,
        bundle("batch", post(mrn_patient("1")), post(broken),
               request("GET", "Patient/nobody"), request("PUT", "Patient/example", patient())),
    )

    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "404 Not Found", "201 Created"]
    outcome = result["entry"][1]["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Patient.birthDate"]
    assert await count(store, "Patient") == 2


async def test_sample_converter_bundle_as_transaction(store: SQLiteStore) -> None:
    """FHIR-Converter's golden output for an ADT^A04 (8 PUT entries), sent as a
    transaction: every resource lands under its id with its references intact."""
    raw = (SAMPLES / "fhir" / "fhirconverter_ADT04-251-expected.json").read_bytes()
    sample = jsonutil.loads(raw.removeprefix(b"\xef\xbb\xbf"))
    sample["type"] = "transaction"

    result = await process_bundle(store, CTX, sample, base_url=BASE)

    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created"] * 8
    account = (await store.read(CTX, "Account", "7b989e2a-3e77-edde-7857-598322ea862b")).resource
    assert account["subject"][0]["reference"] == "Patient/106decd4-a7b0-34eb-afe9-94e54bdff26f"
    assert await count(store) == 8


async def test_sample_with_a_bad_entry_fails_as_transaction_and_partly_as_batch(
    store: SQLiteStore,
) -> None:
    # FHIR-Converter's ADT01-23 output has "PUT Organization/" (no id) at entry 5.
    raw = (SAMPLES / "fhir" / "fhirconverter_ADT01-23-expected.json").read_bytes()
    sample = jsonutil.loads(raw.removeprefix(b"\xef\xbb\xbf"))

    with pytest.raises(FHIRError) as caught:
        await process_bundle(store, CTX, {**sample, "type": "transaction"})
    assert caught.value.issues[0].expression == ("Bundle.entry[5].request.url",)
    assert await count(store) == 0

    result = await process_bundle(store, CTX, {**sample, "type": "batch"})
    statuses = [e["response"]["status"] for e in result["entry"]]
    # entry 12 is a Provenance without the required agent; 3, 13, 17, 19 and 21 have a
    # telecom value without a system (cpt-2), 4 refers to "Organization/" (no id)
    assert [n for n, s in enumerate(statuses) if s != "201 Created"] == [
        3, 4, 5, 12, 13, 17, 19, 21]
    assert statuses[5] == statuses[12] == statuses[3] == "400 Bad Request"
    assert await count(store) == len(statuses) - 8


# -- over HTTP -----------------------------------------------------------------------------


async def test_transaction_over_http(client: httpx.AsyncClient) -> None:
    body = bundle("transaction", post(mrn_patient("9"), PATIENT_URN),
                  post(observation(PATIENT_URN)))
    response = await client.post(BASE, content=jsonutil.dumps(body), headers=JSON)
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "transaction-response"
    patient_id = new_id(body["entry"][0])
    obs = (await client.get(body["entry"][1]["response"]["location"])).json()
    assert obs["subject"]["reference"] == f"Patient/{patient_id}"
    assert b'"value":4.50' in (await client.get(f"Observation/{obs['id']}")).content


async def test_failed_transaction_over_http_is_an_outcome(client: httpx.AsyncClient) -> None:
    response = await client.post(
        BASE, json=bundle("transaction", post(mrn_patient("9")),
                          post({"resourceType": "Patient", "birthDate": "1974-13-45"})),
    )
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.birthDate"]
    assert (await client.get("Patient")).json()["total"] == 0


async def test_overlapping_transaction_over_http_is_400_naming_the_entries(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(BASE, json=bundle(
        "transaction",
        request("PUT", "Patient/same", {**patient(), "id": "same"}),
        request("PUT", "Patient/same", {**patient(), "id": "same", "gender": "other"})))
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[0]", "Bundle.entry[1]"]
    assert (await client.get("Patient/same")).status_code == 404


async def test_prefer_representation_returns_resources_in_the_response(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        BASE, content=jsonutil.dumps(bundle("batch", post(observation("Patient/x")))),
        headers={**JSON, "Prefer": "return=representation"},
    )
    entry = response.json()["entry"][0]
    assert entry["response"]["status"] == "201 Created"
    assert entry["resource"]["meta"]["versionId"] == "1"
    assert b'"valueQuantity":{"value":4.50,' in response.content
