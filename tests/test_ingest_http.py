"""POST [base]/$ingest over a real socket (uvicorn on 127.0.0.1): HL7v2, CSV and DICOM
bodies into the pipeline, the answers of each (transaction-response, batch-response,
OperationOutcome with line numbers), and the published OperationDefinition."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from live_server import live_server

from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
HL7 = "x-application/hl7-v2+er7"
CTX = Context()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, SQLiteStore]]:
    async with live_server(tmp_path) as (url, store):
        async with httpx.AsyncClient(base_url=f"{url}/fhir/", timeout=60) as client:
            yield client, store


async def test_hl7v2_message_answers_the_transaction_response_then_duplicate(
        server: tuple[httpx.AsyncClient, SQLiteStore]) -> None:
    client, _ = server
    message = (SAMPLES / "hl7v2" / "fhirconverter_LAB-ORU-1.hl7").read_bytes()
    first = await client.post("$ingest", content=message, headers={"Content-Type": HL7})
    assert first.status_code == 200, first.text
    bundle = first.json()
    assert bundle["type"] == "transaction-response"
    statuses = {e["response"]["status"].split()[0] for e in bundle["entry"]}
    assert statuses <= {"200", "201"} and "201" in statuses
    assert any(e["response"]["location"].startswith("Observation/") for e in bundle["entry"])
    again = await client.post("$ingest", content=message,
                              headers={"Content-Type": "application/hl7-v2"})
    assert again.status_code == 200
    assert again.json()["issue"][0]["code"] == "duplicate"


async def test_bad_hl7v2_is_422_and_kept(server: tuple[httpx.AsyncClient, SQLiteStore]) -> None:
    client, store = server
    response = await client.post("$ingest", content=b"this is not HL7",
                                 headers={"Content-Type": HL7})
    assert response.status_code == 422
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "kept as input" in diagnostics
    (kept,) = await store.list_inputs(CTX, feed="hl7v2", status="rejected")
    assert kept.content.rstrip(b"\r") == b"this is not HL7"  # segments end in CR, as split
    two = (SAMPLES / "hl7v2" / "fhirconverter_LAB-ORU-1.hl7").read_bytes()
    both = await client.post("$ingest", content=two + b"\r" + two, headers={"Content-Type": HL7})
    assert both.status_code == 400
    assert "one HL7v2 message per request; the body holds 2" in both.text


async def test_csv_answers_a_batch_response_with_one_entry_per_row(
        server: tuple[httpx.AsyncClient, SQLiteStore]) -> None:
    client, _ = server
    data = (SAMPLES / "csv" / "synthea_patients.csv").read_bytes()
    first = await client.post("$ingest", params={"mapping": "patients"}, content=data,
                              headers={"Content-Type": "text/csv"})
    assert first.status_code == 200, first.text
    entries = first.json()["entry"]
    assert first.json()["type"] == "batch-response" and len(entries) == 109
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[0]["response"]["location"].startswith("Patient/")
    assert entries[0]["response"]["outcome"]["issue"][0]["diagnostics"] == "line 2"
    found = await client.get("Patient", params={
        "identifier": "https://github.com/synthetichealth/synthea|07cb2889-a47c-bede-f317-"
                      "57a3822ec014"})
    assert found.json()["entry"][0]["resource"]["name"][0]["family"] == "Franecki"
    again = await client.post("$ingest", params={"mapping": "patients"}, content=data,
                              headers={"Content-Type": "text/csv; charset=utf-8"})
    assert {e["response"]["status"] for e in again.json()["entry"]} == {"200 OK"}
    total = await client.get("Patient", params={"_summary": "count"})
    assert total.json()["total"] == 109


async def test_csv_bad_rows_carry_their_line_numbers(
        server: tuple[httpx.AsyncClient, SQLiteStore]) -> None:
    client, _ = server
    text = ("Id;BIRTHDATE;LAST;GENDER\n"
            "p-1;1980-05-15;Müller;M\n"
            "p-2;15.13.1980;Meier;F\n"
            "p-3;01.02.1970;Schmidt;F\n")
    response = await client.post("$ingest", params={"mapping": "patients"},
                                 content=text.encode("latin-1"),
                                 headers={"Content-Type": "text/csv; charset=iso-8859-1"})
    assert response.status_code == 200, response.text
    rows = [e["response"] for e in response.json()["entry"]]
    assert [r["status"] for r in rows] == ["201 Created", "422 Unprocessable Entity",
                                           "201 Created"]
    assert rows[1]["outcome"]["issue"][0]["diagnostics"].startswith(
        "line 3: column BIRTHDATE is not a date in the formats")
    found = await client.get("Patient", params={"family": "Müller"})
    assert found.json()["total"] == 1
    # every row bad: the answer is an OperationOutcome, one issue per row
    bad = "Id,BIRTHDATE,LAST,GENDER\nq-1,,X,M\nq-2,1980-01-01,,F\n"
    refused = await client.post("$ingest", params={"mapping": "patients"}, content=bad,
                                headers={"Content-Type": "text/csv"})
    assert refused.status_code == 422
    assert [i["diagnostics"].split(" (kept")[0] for i in refused.json()["issue"]] == [
        "line 2: column BIRTHDATE is empty", "line 3: column LAST is empty"]


@pytest.mark.parametrize(("params", "content", "content_type", "status", "says"), [
    ({}, b"a,b\n1,2\n", "text/csv", 400, "needs the mapping parameter"),
    ({"mapping": "labs"}, b"a,b\n1,2\n", "text/csv", 400,
     "built-in mapping name (known: lab-results, patients, vital-signs)"),
    ({"mapping": "/etc/passwd"}, b"a,b\n1,2\n", "text/csv", 400, "built-in mapping name"),
    ({"mapping": "patients", "encoding": "utf-8"}, "Id;Ä\n".encode("latin-1"), "text/csv",
     400, "not valid utf-8"),
    ({"mapping": "patients"}, b"a,b\n1,2\n", "text/csv", 400, "lacks the column(s)"),
    ({}, b"hello", "text/plain", 415, "$ingest takes"),
    ({"mapping": "patients"}, b"", "text/csv", 400, "body is empty"),
])
async def test_unreadable_requests_are_4xx_with_the_reason(
        server: tuple[httpx.AsyncClient, SQLiteStore], params: dict[str, str], content: bytes,
        content_type: str, status: int, says: str) -> None:
    client, store = server
    response = await client.post("$ingest", params=params, content=content,
                                 headers={"Content-Type": content_type})
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
    assert says in response.json()["issue"][0]["diagnostics"]
    assert await store.list_inputs(CTX) == []  # nothing to keep: nothing was taken


async def test_dicom_file_is_stored_as_an_imaging_study(
        server: tuple[httpx.AsyncClient, SQLiteStore]) -> None:
    client, _ = server
    data = (SAMPLES / "dicom" / "pydicom_CT_small.dcm").read_bytes()
    response = await client.post("$ingest", content=data,
                                 headers={"Content-Type": "application/dicom"})
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "transaction-response"
    studies = await client.get("ImagingStudy")
    (study,) = [e["resource"] for e in studies.json()["entry"]]
    assert study["series"][0]["modality"]["code"] == "CT"
    bad = await client.post("$ingest", content=b"not a dicom file at all",
                            headers={"Content-Type": "application/dicom"})
    assert bad.status_code == 422


async def test_operation_definition_and_capability_statement(
        server: tuple[httpx.AsyncClient, SQLiteStore]) -> None:
    client, _ = server
    definition = (await client.get("OperationDefinition/ingest")).json()
    assert (definition["resourceType"], definition["code"], definition["system"]) == (
        "OperationDefinition", "ingest", True)
    assert {p["name"] for p in definition["parameter"]} >= {"mapping", "encoding", "delimiter"}
    capability = (await client.get("metadata")).json()
    operations = {o["name"]: o["definition"] for o in capability["rest"][0]["operation"]}
    assert operations["ingest"].endswith("/fhir/OperationDefinition/ingest")


async def test_transaction_response_full_urls_are_absolute(
        server: tuple[httpx.AsyncClient, SQLiteStore]) -> None:
    client, _ = server
    message = (SAMPLES / "hl7v2" / "fhirconverter_LAB-ORU-1.hl7").read_bytes()
    response = await client.post("$ingest", content=message, headers={"Content-Type": HL7})
    assert response.status_code == 200, response.text
    base = str(client.base_url).rstrip("/")
    urls = [e["fullUrl"] for e in response.json()["entry"] if "fullUrl" in e]
    assert urls and all(u.startswith(base + "/") for u in urls)  # R4 bdl: absolute or urn
    assert any(u.startswith(base + "/MessageHeader/") for u in urls)


async def test_an_hl7v2_message_past_the_caps_is_413(
        server: tuple[httpx.AsyncClient, SQLiteStore]) -> None:
    client, store = server
    obx = b"".join(b"OBX|%d|NM|718-7^Hgb^LN||13.1|g/dL|||||F\r" % i for i in range(1, 2100))
    big = (b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|HUGE1|P|2.5\r"
           b"PID|1||77^^^X^MR||Doe^Huge||19800101|M\rOBR|1||ORD1|718-7^Hgb^LN\r" + obx)
    response = await client.post("$ingest", content=big, headers={"Content-Type": HL7})
    assert response.status_code == 413
    assert "2102 segments; this server takes at most 2000" in response.text
    (kept,) = await store.list_inputs(CTX, status="rejected")
    assert kept.content == big
    # the body cap is the MLLP listener's (4 MiB), not the 64 MiB of FHIR Bundles
    huge = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X|P|2.5\r" + b"NTE|1||" + b"x" * (5 << 20)
    too_large = await client.post("$ingest", content=huge, headers={"Content-Type": HL7})
    assert too_large.status_code == 413 and "larger than 4 MiB" in too_large.text


async def test_ingest_uses_the_pipeline_the_app_was_given(tmp_path: Path) -> None:
    """`serve` hands its listeners' pipeline to the app, so `$ingest` applies the same
    --max-input-resources cap as MLLP and DICOM (an ADT^A01 makes more than 2)."""
    from adapters.pipeline import Pipeline
    from fhir_server.app import create_app

    store = await SQLiteStore.open(tmp_path / "fhir.sqlite3")
    try:
        app = create_app(store, pipeline=Pipeline(store, max_resources=2))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://test/fhir/") as client:
            message = (b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|CAP1|P|2.5\rEVN|A01|20240101\r"
                       b"PID|1||CAP1^^^H^MR||Name^Ann||19800101|F\rPV1|1|I\r")
            response = await client.post("$ingest", content=message,
                                         headers={"Content-Type": HL7})
            assert response.status_code == 413, response.text
            assert "takes at most 2 per message" in response.text  # the default is 2000
        (kept,) = await store.list_inputs(CTX, status="rejected")
        assert kept.content == message
    finally:
        await store.close()
