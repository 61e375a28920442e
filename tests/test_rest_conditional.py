"""Conditional create, update and delete (R4 http.html#ccreate, #cond-update, #cdelete)."""

from __future__ import annotations

import httpx
import pytest
from rest_examples import patient

pytestmark = pytest.mark.anyio

MRN = "urn:oid:1.2.36.146.595.217.0.1"
BY_MRN = f"identifier={MRN}|12345"


def with_mrn(value: str, **changes: object) -> dict[str, object]:
    resource = patient(**changes)
    resource["identifier"] = [{"system": MRN, "value": value}]
    return resource


async def test_conditional_create_creates_when_nothing_matches(client: httpx.AsyncClient) -> None:
    response = await client.post("Patient", json=with_mrn("12345"),
                                 headers={"If-None-Exist": BY_MRN})
    assert response.status_code == 201


async def test_conditional_create_returns_the_one_match(client: httpx.AsyncClient) -> None:
    first = await client.post("Patient", json=with_mrn("12345"))
    second = await client.post(
        "Patient", json=with_mrn("12345", gender="female"), headers={"If-None-Exist": BY_MRN}
    )

    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["gender"] == "male"  # the existing resource, unchanged
    total = (await client.get("Patient", params={"identifier": f"{MRN}|12345"})).json()["total"]
    assert total == 1


async def test_conditional_create_with_several_matches_is_412(client: httpx.AsyncClient) -> None:
    await client.post("Patient", json=with_mrn("12345"))
    await client.post("Patient", json=with_mrn("12345"))
    response = await client.post("Patient", json=with_mrn("12345"),
                                 headers={"If-None-Exist": BY_MRN})
    assert response.status_code == 412
    assert response.json()["issue"][0]["code"] == "multiple-matches"


async def test_conditional_create_with_unknown_parameter_is_400(client: httpx.AsyncClient) -> None:
    # an ignored parameter would widen the match to every Patient
    response = await client.post("Patient", json=with_mrn("1"),
                                 headers={"If-None-Exist": "shoe-size=42"})
    assert response.status_code == 400


async def test_conditional_update_creates_then_updates(client: httpx.AsyncClient) -> None:
    resource = with_mrn("12345")
    del resource["id"]

    created = await client.put(f"Patient?{BY_MRN}", json=resource)
    assert created.status_code == 201
    pid = created.json()["id"]

    updated = await client.put(f"Patient?{BY_MRN}", json={**resource, "gender": "female"})
    assert updated.status_code == 200
    assert updated.json()["id"] == pid
    assert updated.headers["etag"] == 'W/"2"'


async def test_conditional_update_with_several_matches_is_412(client: httpx.AsyncClient) -> None:
    await client.post("Patient", json=with_mrn("12345"))
    await client.post("Patient", json=with_mrn("12345"))
    response = await client.put(f"Patient?{BY_MRN}", json=with_mrn("12345"))
    assert response.status_code == 412


async def test_conditional_update_with_a_different_body_id_is_400(
    client: httpx.AsyncClient,
) -> None:
    await client.post("Patient", json=with_mrn("12345"))
    response = await client.put(f"Patient?{BY_MRN}", json=with_mrn("12345", id="someone-else"))
    assert response.status_code == 400


async def test_conditional_delete(client: httpx.AsyncClient) -> None:
    pid = (await client.post("Patient", json=with_mrn("12345"))).json()["id"]
    await client.post("Patient", json=with_mrn("999"))

    response = await client.delete(f"Patient?{BY_MRN}")

    assert response.status_code == 204
    assert (await client.get(f"Patient/{pid}")).status_code == 410
    again = await client.delete(f"Patient?{BY_MRN}")
    assert again.status_code == 204  # nothing matches any more: nothing to do
    assert (await client.get("Patient")).json()["total"] == 1


async def test_conditional_delete_with_several_matches_is_412(client: httpx.AsyncClient) -> None:
    await client.post("Patient", json=with_mrn("12345"))
    await client.post("Patient", json=with_mrn("12345"))
    response = await client.delete(f"Patient?{BY_MRN}")
    assert response.status_code == 412
    assert (await client.get("Patient")).json()["total"] == 2
