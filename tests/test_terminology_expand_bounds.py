"""Value sets that include value sets (break-new finding 19): a value set referenced
several times is expanded once per top-level expansion, and the work of one expansion
is bounded (422 too-costly naming the value set) for $expand, $validate-code and
code:in alike; meanwhile other clients are answered. Real HTTP (uvicorn on 127.0.0.1), a
real SQLite file, the shipped LOINC subset (189 concepts): the tester's recipe with
LOINC instead of ICD-10-CM and one more level, 3^8 = 6,561 expansions without the memo."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import live_server

from terminology import expand

pytestmark = pytest.mark.anyio

LOINC = "http://loinc.org"
GLUCOSE = "2345-7"  # Glucose [Mass/volume] in Serum or Plasma: left out of f0
HEMOGLOBIN = "718-7"  # Hemoglobin [Mass/volume] in Blood
LEVELS = 8  # f8 includes f7 three times, ... f1 includes f0 three times (depth 8: allowed)


def _vs(n: int) -> dict[str, Any]:
    url = f"http://ex.org/vs/f{n}"
    if n == 0:
        compose: dict[str, Any] = {"include": [{"system": LOINC}],
                                   "exclude": [{"system": LOINC, "concept": [{"code": GLUCOSE}]}]}
    else:
        compose = {"include": [{"valueSet": [f"http://ex.org/vs/f{n - 1}"]}] * 3}
    return {"resourceType": "ValueSet", "url": url, "status": "active", "compose": compose}


async def _store_chain(http: httpx.AsyncClient) -> None:
    for n in range(LEVELS + 1):
        r = await http.post("/fhir/ValueSet", json=_vs(n))
        assert r.status_code == 201, r.text


async def _metadata_while(http: httpx.AsyncClient, slow: Any) -> tuple[httpx.Response, float]:
    """Start `slow`, ask /metadata 0.1 s later: (slow's response, metadata's seconds)."""
    task = asyncio.ensure_future(slow)
    await asyncio.sleep(0.1)
    started = time.monotonic()
    meta = await http.get("/fhir/metadata")
    took = time.monotonic() - started
    assert meta.status_code == 200 and meta.json()["resourceType"] == "CapabilityStatement"
    return await task, took


def _validate(http: httpx.AsyncClient, url: str, code: str) -> Any:
    return http.get("/fhir/ValueSet/$validate-code",
                    params={"url": url, "system": LOINC, "code": code})  # fmt: skip


def _result(body: dict[str, Any]) -> bool:
    return next(p["valueBoolean"] for p in body["parameter"] if p["name"] == "result")


async def test_value_set_included_three_times_per_level_is_expanded_once(
    tmp_path: Path,
) -> None:
    top = f"http://ex.org/vs/f{LEVELS}"
    async with live_server(tmp_path) as (url, _store), httpx.AsyncClient(
        base_url=url, timeout=60
    ) as http:
        r = await http.get("/fhir/ValueSet/$expand", params={"url": f"{LOINC}/vs", "count": 0})
        assert r.status_code == 200, r.text
        loinc_total = r.json()["expansion"]["total"]
        assert loinc_total == 189  # the shipped subset
        await _store_chain(http)
        started = time.monotonic()
        r, metadata_seconds = await _metadata_while(
            http, http.get("/fhir/ValueSet/$expand", params={"url": top, "count": 2}))
        assert r.status_code == 200, r.text
        # without the memo: 6,561 expansions of f0, tens of seconds with the loop held
        assert time.monotonic() - started < 5
        assert metadata_seconds < 1
        expansion = r.json()["expansion"]
        assert expansion["total"] == loinc_total - 1  # LOINC minus glucose
        assert [c["code"] for c in expansion["contains"]] == ["8867-4", "8480-6"]
        # membership goes through the same expansion
        r = await _validate(http, top, GLUCOSE)
        assert r.status_code == 200 and _result(r.json()) is False
        r = await _validate(http, top, HEMOGLOBIN)
        assert r.status_code == 200 and _result(r.json()) is True
        # ... and so does code:in
        for code in (GLUCOSE, HEMOGLOBIN):
            r = await http.post("/fhir/Observation", json={
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": LOINC, "code": code}]}})  # fmt: skip
            assert r.status_code == 201, r.text
        r = await http.get("/fhir/Observation", params={"code:in": top})
        assert r.status_code == 200, r.text
        found = [e["resource"]["code"]["coding"][0]["code"] for e in r.json().get("entry", [])]
        assert found == [HEMOGLOBIN]


async def test_expansion_work_is_bounded_too_costly_naming_the_value_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # f0 selects 189 and keeps 188; each level hands the 188 on: f8 handles ~1,900 members
    monkeypatch.setattr(expand, "MAX_WORK", 1000)
    top = f"http://ex.org/vs/f{LEVELS}"
    async with live_server(tmp_path) as (url, _store), httpx.AsyncClient(
        base_url=url, timeout=60
    ) as http:
        await _store_chain(http)
        r = await http.get("/fhir/ValueSet/$expand",
                           params={"url": "http://ex.org/vs/f2", "count": 1})  # fmt: skip
        assert r.status_code == 200, r.text  # within the bound: ~750 members
        assert r.json()["expansion"]["total"] == 188
        r = await http.get("/fhir/ValueSet/$expand", params={"url": top, "count": 2})
        assert r.status_code == 422, r.text
        issue = r.json()["issue"][0]
        assert issue["code"] == "too-costly"
        assert f"value set {top} " in issue["diagnostics"] and "1000" in issue["diagnostics"]
        assert "Glucose" not in issue["diagnostics"]  # names the value set, not concepts
        r = await _validate(http, top, HEMOGLOBIN)
        assert r.status_code == 422, r.text
        assert r.json()["issue"][0]["code"] == "too-costly"
        assert top in r.json()["issue"][0]["diagnostics"]
        r = await http.get("/fhir/Observation", params={"code:in": top})
        assert r.status_code == 422, r.text
        issue = r.json()["issue"][0]
        assert issue["code"] == "too-costly" and issue["expression"] == ["code:in"]
        assert top in issue["diagnostics"]
