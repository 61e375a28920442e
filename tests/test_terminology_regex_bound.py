"""A catastrophic `regex` filter (break-new finding 9) is bounded and does not stop the
server: the request is a 422 too-costly naming the filter, and another client's
/metadata is answered meanwhile. Real HTTP (uvicorn on 127.0.0.1), a real SQLite file,
the shipped LOINC subset."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import live_server

from terminology import regex_filter

pytestmark = pytest.mark.anyio

LOINC = "http://loinc.org"
TESTERS = "(.*.*)*x"  # the tester's pattern: exponential in Python re, linear in `regex`
# exponential in both engines: every split of a display into 1- and 2-character pieces
CATASTROPHIC = r"(.|..)*\d{9}"
BUDGET = 1.0


def _value_set(pattern: str, url: str | None = None) -> dict[str, Any]:
    vs: dict[str, Any] = {"resourceType": "ValueSet", "status": "active", "compose": {
        "include": [{"system": LOINC, "filter": [
            {"property": "display", "op": "regex", "value": pattern}]}]}}  # fmt: skip
    if url:
        vs["url"] = url
    return vs


def _expand_body(pattern: str) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "valueSet", "resource": _value_set(pattern)},
        {"name": "count", "valueInteger": 1000}]}  # fmt: skip


async def _metadata_while(http: httpx.AsyncClient, slow: Any) -> tuple[httpx.Response, float]:
    """Start `slow`, then ask /metadata 0.2 s later: (slow's response, metadata's seconds)."""
    task = asyncio.ensure_future(slow)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    meta = await http.get("/fhir/metadata")
    took = time.monotonic() - started
    assert meta.status_code == 200
    assert meta.json()["resourceType"] == "CapabilityStatement"
    return await task, took


@pytest.fixture(autouse=True)
def _short_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(regex_filter, "REGEX_BUDGET_SECONDS", BUDGET)


async def test_catastrophic_regex_expand_is_too_costly_and_server_stays_up(
    tmp_path: Path,
) -> None:
    async with live_server(tmp_path) as (url, _store), httpx.AsyncClient(
        base_url=url, timeout=30
    ) as http:
        # a sound pattern still works, on real LOINC displays
        r = await http.post("/fhir/ValueSet/$expand", json=_expand_body("Glucose .*"))
        assert r.status_code == 200, r.text
        codes = {c["code"] for c in r.json()["expansion"]["contains"]}
        assert "2345-7" in codes  # Glucose [Mass/volume] in Serum or Plasma
        # the tester's pattern answers, with the one display of the subset ending in x
        r, metadata_seconds = await _metadata_while(
            http, http.post("/fhir/ValueSet/$expand", json=_expand_body(TESTERS)))
        assert metadata_seconds < 0.5
        assert r.status_code == 200, r.text
        assert [c["display"] for c in r.json()["expansion"]["contains"]] == [
            "Weight-for-length Per age and sex"]
        started = time.monotonic()
        r, metadata_seconds = await _metadata_while(
            http, http.post("/fhir/ValueSet/$expand", json=_expand_body(CATASTROPHIC)))
        assert time.monotonic() - started < BUDGET + 5
        assert metadata_seconds < 0.5  # not queued behind the regex
        assert r.status_code == 422, r.text
        issue = r.json()["issue"][0]
        assert issue["code"] == "too-costly"
        assert repr(CATASTROPHIC) in issue["diagnostics"] and "display" in issue["diagnostics"]
        assert issue["expression"] == ["ValueSet.compose.include.filter"]
        # an invalid pattern is still a 400, and the server answers it
        r = await http.post("/fhir/ValueSet/$expand", json=_expand_body("["))
        assert r.status_code == 400 and r.json()["issue"][0]["code"] == "invalid"


async def test_catastrophic_regex_through_stored_value_set_code_in(tmp_path: Path) -> None:
    vs_url = "http://example.org/vs/slow"
    async with live_server(tmp_path) as (url, _store), httpx.AsyncClient(
        base_url=url, timeout=30
    ) as http:
        r = await http.post("/fhir/ValueSet", json=_value_set(CATASTROPHIC, vs_url))
        assert r.status_code == 201, r.text
        r = await http.post("/fhir/Observation", json={
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "2345-7"}]}})  # fmt: skip
        assert r.status_code == 201, r.text
        r, metadata_seconds = await _metadata_while(
            http, http.get("/fhir/Observation", params={"code:in": vs_url}))
        assert metadata_seconds < 0.5
        assert r.status_code == 422, r.text
        assert r.json()["issue"][0]["code"] == "too-costly"
        assert repr(CATASTROPHIC) in r.json()["issue"][0]["diagnostics"]
