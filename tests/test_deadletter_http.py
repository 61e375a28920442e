"""The dead-letter queue and the feed counters over a real socket (uvicorn on
127.0.0.1): listing without content, filtered by feed and paged; one input with its
reason, received time and size; its raw content as a download; retry; counters that
agree with what happened and survive a restart of the server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from fhir_server.storage.base import Context
from live_server import live_server

pytestmark = pytest.mark.anyio

HL7 = "x-application/hl7-v2+er7"
LABS = ("DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE\n"
        "2020-02-06T08:45:50Z,pat-1,enc-1,laboratory,718-7,Hemoglobin,16.8,g/dL,numeric\n"
        "2020-02-06T08:45:50Z,pat-1,enc-1,laboratory,777-3,Platelets,265.5,10*3/uL,numeric\n"
        "2020-02-06T08:45:50Z,pat-1,enc-1,laboratory,785-6,MCH,31.1,pg,numeric\n")
PATIENTS = "Id,BIRTHDATE,FIRST,LAST,GENDER\npat-1,1990-01-01,Erika,Mustermann,F\n"


async def post_csv(client: httpx.AsyncClient, text: str, mapping: str) -> httpx.Response:
    return await client.post("/fhir/$ingest", params={"mapping": mapping}, content=text,
                             headers={"Content-Type": "text/csv"})


async def test_list_show_download_retry_and_counters(tmp_path: Path) -> None:
    async with live_server(tmp_path) as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            # three lab rows whose patient is not loaded yet, and one bad HL7v2 message
            refused = await post_csv(client, LABS, "lab-results")
            assert refused.status_code == 422
            bad = await client.post("/fhir/$ingest", content=b"MSH|not really",
                                    headers={"Content-Type": HL7})
            assert bad.status_code == 422

            listing = (await client.get("/admin/deadletter")).json()
            assert [i["feed"] for i in listing["items"]] == ["hl7v2", "csv", "csv", "csv"]
            assert listing["next"] is None
            assert "Mustermann" not in json.dumps(listing) and "pat-1" not in json.dumps(listing)
            assert all("content" not in i or i["content"].endswith("/content")
                       for i in listing["items"])

            page = (await client.get("/admin/deadletter",
                                     params={"feed": "csv", "_count": "2"})).json()
            assert [i["reason"][:7] for i in page["items"]] == ["line 4:", "line 3:"]
            assert page["next"] is not None
            rest = (await client.get(page["next"])).json()
            assert [i["reason"][:7] for i in rest["items"]] == ["line 2:"]
            assert rest["next"] is None
            line2 = rest["items"][0]

            shown = (await client.get(f"/admin/deadletter/{line2['id']}")).json()
            assert shown["status"] == "rejected" and shown["feed"] == "csv"
            assert "conditional reference to Patient matches no resource" in shown["reason"]
            assert shown["received"].startswith("20") and shown["size"] > 100
            download = await client.get(shown["content"])
            assert download.status_code == 200
            assert download.headers["content-disposition"].startswith("attachment")
            row = download.json()
            assert row["mapping"] == "lab-results" and row["rows"][0][0] == 2
            assert row["rows"][0][1][4] == "718-7"

            counters = (await client.get("/admin/feeds")).json()["feeds"]
            assert counters["csv"]["received"] == 3 and counters["csv"]["rejected"] == 3
            assert counters["csv"]["pending"] == 3
            assert counters["hl7v2"]["rejected"] == 1

            # still rejected: the patient is not there yet
            again = (await client.post(f"/admin/deadletter/{line2['id']}/retry")).json()
            assert again["status"] == "rejected"
            assert (await post_csv(client, PATIENTS, "patients")).status_code == 200
            retried = (await client.post(f"/admin/deadletter/{line2['id']}/retry")).json()
            assert retried["status"] == "stored"
            found = (await client.get("/fhir/Observation",
                                      params={"code": "http://loinc.org|718-7"})).json()
            assert found["total"] == 1
            assert found["entry"][0]["resource"]["valueQuantity"]["value"] == 16.8
            assert len((await client.get("/admin/deadletter",
                                         params={"feed": "csv"})).json()["items"]) == 2

    # the counters are in the database: a new server on the same file reads them
    async with live_server(tmp_path) as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            csv = (await client.get("/admin/feeds")).json()["feeds"]["csv"]
            assert (csv["received"], csv["stored"], csv["rejected"]) == (4, 1, 3)
            assert (csv["reprocessed"], csv["recovered"], csv["pending"]) == (2, 1, 2)


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/admin/deadletter/999", 404),
    ("GET", "/admin/deadletter/abc", 404),
    ("GET", "/admin/deadletter/999/content", 404),
    ("POST", "/admin/deadletter/999/retry", 404),
    ("GET", "/admin/deadletter?_count=0", 400),
    ("GET", "/admin/deadletter?before=x", 400),
])
async def test_unknown_inputs_and_bad_parameters(tmp_path: Path, method: str, path: str,
                                                 status: int) -> None:
    async with live_server(tmp_path) as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            response = await client.request(method, path)
            assert response.status_code == status
            assert response.json()["resourceType"] == "OperationOutcome"


async def test_stored_inputs_are_not_served_and_unknown_feeds_are_refused(
        tmp_path: Path) -> None:
    async with live_server(tmp_path) as (url, store):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            assert (await post_csv(client, PATIENTS, "patients")).status_code == 200
            (stored,) = await store.list_inputs(Context(), status="stored")
            for path in (f"/admin/deadletter/{stored.id}",
                         f"/admin/deadletter/{stored.id}/content"):
                response = await client.get(path)
                assert response.status_code == 404
                assert "not in the dead-letter queue" in response.text
                assert "Mustermann" not in response.text
            evil = await client.get("/admin/deadletter", params={"feed": "evil"})
            assert evil.status_code == 400
            assert "feed 'evil' is not known (known: csv, dicom, hl7v2)" in evil.text
            negative = await client.get("/admin/deadletter", params={"_count": "-5"})
            assert negative.status_code == 400 and "_count must be 1 to" in negative.text
            assert (await client.get("/admin/deadletter", params={"feed": "csv"})
                    ).status_code == 200


async def test_a_rejected_dicom_file_is_listed_with_its_size_and_downloaded_as_itself(
        tmp_path: Path) -> None:
    import pydicom

    sample = Path(__file__).resolve().parents[2] / "shared" / "samples" / "dicom"
    ds = pydicom.dcmread(sample / "pydicom_MR_small.dcm")
    ds.SpecificCharacterSet = "ISO_IR 999"  # refused: unknown character set
    import io

    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    async with live_server(tmp_path) as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            refused = await client.post("/fhir/$ingest", content=data,
                                        headers={"Content-Type": "application/dicom"})
            assert refused.status_code == 422
            (item,) = (await client.get("/admin/deadletter", params={"feed": "dicom"})
                       ).json()["items"]
            assert item["size"] == len(data)
            download = await client.get(item["content"])
            assert download.status_code == 200 and download.content == data
