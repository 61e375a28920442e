"""What a real MongoDB / PyMongo does and mongomock does not, answered as the issue asks
(review-mongo #1, #2, #3, #12, #14, #15, #20), over the facade (tests/mongo_async.py):

- server "unavailable" command errors (a shard without a primary, mongos losing a host,
  a time limit, a write concern not met) are 503 OperationOutcomes, not 500;
- every operation is bounded by PyMongo's client-side timeout (`timeoutMS`);
- a resource or raw input over MongoDB's 16 MiB document limit is a 413 naming it;
- start-up: an index conflict names the index and what to do, and closes the client;
  the SearchParameter load and `_history` sorts have indexes that serve them.

No MongoDB server runs here: the facade raises the errors a server or the driver would
(`fail_next`, its 16 MiB check); whether a server raises them in these situations is
from the MongoDB manual and the installed driver, not observed.
"""

from __future__ import annotations

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import (
    DocumentTooLarge,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    WriteConcernError,
    WTimeoutError,
)

from fhir_server.app import create_app
from fhir_server.storage import mongodb
from fhir_server.storage.base import Context
from fhir_server.storage.mongodb import (
    HISTORY_SORT,
    MAX_BODY_BYTES,
    MongoStore,
    StoreUnavailable,
    client_options,
)
from fhir_server.storage.mongodb_errors import as_fhir_error
from mongo_async import MAX_BSON_SIZE, AsyncMockClient

pytestmark = pytest.mark.anyio
URL = "mongodb://mongomock/fhir"
PATIENT = {"resourceType": "Patient", "gender": "female"}


async def _app(client: AsyncMockClient) -> tuple[MongoStore, httpx.AsyncClient]:
    store = await MongoStore.open(URL, client=client)
    transport = httpx.ASGITransport(app=create_app(store))
    return store, httpx.AsyncClient(transport=transport, base_url="http://fhir.test/fhir/")


def _failure(code: int, name: str) -> OperationFailure:
    return OperationFailure(f"{name} (emulated)", code, {"codeName": name, "code": code})


# (code, codeName) a mongos or a replica set member answers when part of the cluster
# is away; the retryable set of the PyMongo driver plus 24, 50, 133
UNAVAILABLE = [
    (6, "HostUnreachable"), (7, "HostNotFound"), (89, "NetworkTimeout"),
    (133, "FailedToSatisfyReadPreference"), (134, "ReadConcernMajorityNotAvailableYet"),
    (262, "ExceededTimeLimit"), (9001, "SocketException"), (50, "MaxTimeMSExpired"),
    (24, "LockTimeout"),
]  # fmt: skip


@pytest.mark.parametrize(("code", "name"), UNAVAILABLE)
async def test_a_server_unavailable_code_is_503_and_the_next_request_works(
    code: int, name: str
) -> None:
    mock = AsyncMockClient()
    store, http = await _app(mock)
    async with http:
        created = await http.post("Patient", json=PATIENT)
        pid = created.json()["id"]
        mock.fail_next(_failure(code, name))
        response = await http.get(f"Patient/{pid}")
        assert response.status_code == 503, response.text
        issue = response.json()["issue"][0]
        assert response.json()["resourceType"] == "OperationOutcome"
        assert issue["code"] == "transient"
        assert f"code {code}" in issue["diagnostics"]
        assert (await http.get(f"Patient/{pid}")).status_code == 200
    await store.close()


async def test_a_write_concern_failure_is_503_saying_the_write_may_be_applied() -> None:
    mock = AsyncMockClient()
    store, http = await _app(mock)
    async with http:
        mock.fail_next(WriteConcernError("waiting for replication timed out", 64,
                                         {"errInfo": {"wtimeout": True}}))
        response = await http.get("Patient?gender=female")
        assert response.status_code == 503, response.text
        assert "the write may have been applied" in response.json()["issue"][0]["diagnostics"]
    await store.close()
    for exc in (WTimeoutError("timed out", 64), _failure(64, "WriteConcernFailed")):
        error = as_fhir_error(exc)
        assert error.status == 503 and "may have been applied" in error.issues[0].diagnostics


def test_a_retryable_label_is_503_and_a_write_conflict_stays_409() -> None:
    labelled = OperationFailure("x", 11601, {"errorLabels": ["RetryableWriteError"]})
    assert as_fhir_error(labelled).status == 503
    conflict = OperationFailure("WriteConflict", 112,
                                {"errorLabels": ["TransientTransactionError"]})
    assert as_fhir_error(conflict).status == 409
    assert as_fhir_error(_failure(2, "BadValue")).status == 500  # a bug of ours, not 503


# -- client-side operation timeout (#2) -----------------------------------------------


def test_the_client_gets_an_operation_timeout_unless_the_url_sets_one() -> None:
    options = client_options("mongodb://db1,db2/fhir?replicaSet=rs0", 10_000)
    assert options["timeoutMS"] == mongodb.DEFAULT_TIMEOUT_MS == 15_000
    assert options["w"] == "majority"
    own = client_options("mongodb://db1/fhir?replicaSet=rs0&timeoutMS=4000", 10_000)
    assert "timeoutMS" not in own  # the URL's value wins
    # serverSelectionTimeoutMS / wtimeoutMS in the URL are not timeoutMS
    other = client_options("mongodb://db1/?serverSelectionTimeoutMS=500&wtimeoutMS=9", 1)
    assert other["timeoutMS"] == 15_000 and "serverSelectionTimeoutMS" not in other


async def test_pymongo_applies_the_timeout() -> None:
    # the real driver, not connected: the option reaches every operation (CSOT)
    client: AsyncMongoClient = AsyncMongoClient(
        "mongodb://127.0.0.1:1/fhir", connect=False,
        **client_options("mongodb://127.0.0.1:1/fhir", 10_000),
    )
    try:
        assert client.options.timeout == 15.0
        assert client.options.server_selection_timeout == 10.0
    finally:
        await client.close()


@pytest.mark.parametrize(
    "timeout", [ExecutionTimeout("operation exceeded time limit", 50),
                NetworkTimeout("127.0.0.1:1: timed out")],
)
async def test_a_timeout_is_503(timeout: Exception) -> None:
    mock = AsyncMockClient()
    store, http = await _app(mock)
    async with http:
        mock.fail_next(timeout)
        response = await http.post("Patient", json=PATIENT)
        assert response.status_code == 503, response.text
        assert response.json()["issue"][0]["code"] == "transient"
        assert await store.db["resources"].count_documents({}) == 0
    await store.close()


# -- 16 MiB documents (#3) ------------------------------------------------------------


def _binary(size: int) -> dict[str, object]:
    return {"resourceType": "Binary", "contentType": "application/octet-stream",
            "data": "QUFB" * (size // 4)}  # fmt: skip


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1024, MAX_BSON_SIZE + 1024])
async def test_a_resource_over_the_document_limit_is_413(size: int) -> None:
    mock = AsyncMockClient()
    store, http = await _app(mock)
    async with http:
        response = await http.post("Binary", json=_binary(size))
        assert response.status_code == 413, response.text[:300]
        issue = response.json()["issue"][0]
        assert issue["code"] == "too-costly"
        assert "16 MiB, the BSON document limit" in issue["diagnostics"]
        assert await store.db["resources"].count_documents({}) == 0
        assert await store.db["history"].count_documents({}) == 0
        assert (await http.post("Binary", json=_binary(1024))).status_code == 201
    await store.close()


async def test_the_driver_refusing_a_document_is_413() -> None:
    mock = AsyncMockClient()
    store, http = await _app(mock)
    async with http:
        mock.fail_next(DocumentTooLarge("BSON document too large (17000000 bytes)"))
        response = await http.get("Patient")
        assert response.status_code == 413, response.text
    await store.close()
    assert as_fhir_error(_failure(10334, "BSONObjectTooLarge")).status == 413


async def test_a_raw_input_over_the_document_limit_is_413_and_not_kept() -> None:
    store = await MongoStore.open(URL, client=AsyncMockClient())
    with pytest.raises(Exception) as refused:
        async with store.transaction(Context()) as txn:
            await txn.record_input("hl7v2", b"MSH|" + b"x" * MAX_BSON_SIZE, "rejected", "big")
    assert getattr(refused.value, "status", None) == 413
    assert await store.db["inputs"].count_documents({}) == 0
    await store.close()


# -- start-up (#12, #14, #15, #20) ------------------------------------------------------


async def test_an_index_conflict_names_the_index_and_closes_the_client() -> None:
    mock = AsyncMockClient()
    # an index of the same name with other options, as an older release or a DBA made
    mock.sync["fhir"]["resources"].create_index(
        [("tenant", 1), ("type", 1), ("lastUpdated", -1)], name="by_type_time", sparse=True)
    with pytest.raises(StoreUnavailable) as refused:
        await MongoStore.open(URL, client=mock)
    message = str(refused.value)
    assert message.startswith("MongoDB index 'by_type_time' of fhir.resources exists with "
                              "other keys or options than fhir-fusion")
    assert "db.resources.dropIndex('by_type_time')" in message
    assert mock.closed


async def test_search_parameters_and_history_sorts_have_their_indexes() -> None:
    mock = AsyncMockClient()
    # a database of the release before: history indexes without version
    mock.sync["fhir"]["history"].create_index([("tenant", 1), ("lastUpdated", -1)],
                                              name="by_time")
    store = await MongoStore.open(URL, client=mock)
    try:
        resources = await store.db["resources"].index_information()
        assert resources["search_parameters"]["key"] == [("type", 1), ("deleted", 1)]
        assert resources["search_parameters"]["partialFilterExpression"] == {
            "type": "SearchParameter"}
        history = await store.db["history"].index_information()
        keys = [info["key"] for info in history.values()]
        # the whole sort after the equality prefix: system and type level _history
        assert [("tenant", 1), *HISTORY_SORT] in keys
        assert [("tenant", 1), ("type", 1), *HISTORY_SORT] in keys
        assert "by_time" not in history  # the obsolete one dropped
    finally:
        await store.close()


async def test_a_search_index_conflict_names_the_index() -> None:
    mock = AsyncMockClient()
    store = await MongoStore.open(URL, client=mock)
    await store.close()
    from fhir_server.storage.mongodb_search import INDEXES

    name = INDEXES[0].document["name"]
    mock.sync["fhir"]["resources"].drop_index(name)
    mock.sync["fhir"]["resources"].create_index([("tenant", 1)], name=name)  # other keys
    with pytest.raises(StoreUnavailable) as refused:
        await MongoStore.open(URL, client=mock)
    assert "refused an index of fhir-fusion" in str(refused.value)
    assert "(code 85" in str(refused.value) and name in str(refused.value)
