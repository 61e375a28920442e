"""A custom reference SearchParameter (R4 SearchParameter, type reference) works in chains
`_has`, `_include` and `_revinclude` like a built-in one, once `$reindex` has indexed it (break-api F26)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio

FOCUS: dict[str, Any] = {
    "resourceType": "SearchParameter", "id": "obs-focus-custom", "status": "active",
    "url": "http://example.org/fhir/SearchParameter/obs-focus-custom", "name": "ffocus",
    "description": "Observation.focus (custom)", "code": "ffocus", "base": ["Observation"],
    "type": "reference", "target": ["Patient"], "expression": "Observation.focus",
}  # fmt: skip


async def _put(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await client.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text


async def _ids(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> set[str]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return {entry["resource"]["id"] for entry in response.json().get("entry", [])}


async def test_custom_reference_parameter_in_chain_has_and_includes(client: httpx.AsyncClient) -> None:
    await _put(client, {"resourceType": "Patient", "id": "pf1", "name": [{"family": "Tester"}]})
    await _put(client, {"resourceType": "Patient", "id": "pf2", "name": [{"family": "Other"}]})
    for oid, pid, text in (("of1", "pf1", "focusobs"), ("of2", "pf2", "other")):
        await _put(client, {"resourceType": "Observation", "id": oid, "status": "final",
                            "code": {"text": text}, "focus": [{"reference": f"Patient/{pid}"}]})
    await _put(client, FOCUS)
    pending = await client.get("Observation", params={"ffocus.family": "Tester"})
    assert pending.status_code == 400 and "run $reindex" in pending.text
    started = await client.post("$reindex", params={"type": "Observation"})
    assert started.status_code == 202
    for _ in range(500):
        done = await client.get(started.headers["content-location"])
        if done.status_code != 202:
            break
        await asyncio.sleep(0.01)
    assert done.status_code == 200

    assert await _ids(client, "Observation", {"ffocus": "Patient/pf1"}) == {"of1"}
    assert await _ids(client, "Observation", {"ffocus.family": "Tester"}) == {"of1"}
    assert await _ids(client, "Observation", {"ffocus:Patient.family": "Other"}) == {"of2"}
    assert await _ids(client, "Patient", {"_has:Observation:ffocus:code:text": "focusobs"}) == {
        "pf1"}
    included = await client.get("Observation", params={"ffocus": "Patient/pf1",
                                                        "_include": "Observation:ffocus"})
    assert included.status_code == 200, included.text
    assert {(e["resource"]["id"], e["search"]["mode"]) for e in included.json()["entry"]} == {
        ("of1", "match"), ("pf1", "include")}
    revincluded = await client.get("Patient", params={"_id": "pf2",
                                                      "_revinclude": "Observation:ffocus"})
    assert revincluded.status_code == 200, revincluded.text
    assert {(e["resource"]["id"], e["search"]["mode"]) for e in revincluded.json()["entry"]} == {
        ("pf2", "match"), ("of2", "include")}
    wrong = await client.get("Observation", params={"ffocus:Group.name": "x"})
    assert wrong.status_code == 400 and "not a target type" in wrong.text
