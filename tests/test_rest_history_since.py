"""History `_since` (R4 http.html#history) is an instant, which has seconds and a time
zone (datatypes.html#instant): one without a zone, or not an instant, is a 400 naming
_since rather than a guess at the moment meant."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "since",
    ["2026-12-04T17:00:00", "2026-12-04", "2026-12-04T17:00", "20261204T170000Z",
     "2026-13-04T17:00:00Z"],
)  # fmt: skip
async def test_since_without_time_zone_or_not_an_instant_is_400(
    client: httpx.AsyncClient, pid: str, since: str
) -> None:
    response = await client.get(f"Patient/{pid}/_history", params={"_since": since})
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["_since"]


@pytest.mark.parametrize("since", ["2000-01-01T00:00:00Z", "2000-01-01T01:00:00.5+01:00"])
async def test_since_with_time_zone_is_accepted(
    client: httpx.AsyncClient, pid: str, since: str
) -> None:
    response = await client.get("Patient/_history", params={"_since": since})
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 2


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _versions(client: httpx.AsyncClient, pid: str, since: str) -> list[str]:
    response = await client.get(f"Patient/{pid}/_history", params={"_since": since})
    assert response.status_code == 200, response.text
    return [e["response"]["etag"] for e in response.json().get("entry", [])]


async def test_since_beyond_microseconds_is_compared_exactly(
    client: httpx.AsyncClient, pid: str
) -> None:
    # "versions created at or after the given instant" (R4 http.html#history); an instant
    # may have any number of fraction digits (datatypes.html#instant)
    history = (await client.get(f"Patient/{pid}/_history")).json()
    first = _instant(history["entry"][-1]["response"]["lastModified"])
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
    at = first.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    # version 1 was created half a microsecond before this instant: not included
    assert await _versions(client, pid, at + "5Z") == ['W/"2"']
    assert await _versions(client, pid, at + "000001Z") == ['W/"2"']
    # trailing zeros are the same instant: version 1 is at it, so included
    assert await _versions(client, pid, at + "000Z") == ['W/"2"', 'W/"1"']
    before = (first - timedelta(microseconds=1)).astimezone(timezone.utc)
    assert await _versions(
        client, pid, before.strftime("%Y-%m-%dT%H:%M:%S.%f") + "999+00:00"
    ) == ['W/"2"', 'W/"1"']


@pytest.mark.parametrize("offset", ["+15:00", "-14:30", "+14:01", "+05:60"])
async def test_since_with_an_offset_beyond_14_hours_is_400(
    client: httpx.AsyncClient, pid: str, offset: str
) -> None:
    # R4 instant regex: (Z|(+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))
    response = await client.get(f"Patient/{pid}/_history",
                                params={"_since": "2000-01-01T00:00:00" + offset})
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["_since"]
    assert offset in issue["diagnostics"]


async def test_since_with_offset_of_14_hours_is_accepted(
    client: httpx.AsyncClient, pid: str
) -> None:
    response = await client.get(f"Patient/{pid}/_history",
                                params={"_since": "2000-01-01T00:00:00-14:00"})
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 2


async def test_since_beyond_microseconds_in_a_batch_entry_is_compared_exactly(
    client: httpx.AsyncClient, pid: str
) -> None:
    # the store parses _since, so a history read inside a batch rounds the same way
    history = (await client.get(f"Patient/{pid}/_history")).json()
    first = _instant(history["entry"][-1]["response"]["lastModified"])
    at = first.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{pid}/_history?_since={since}"}}
        for since in (at + "5Z", at + "000Z")]}  # fmt: skip
    response = await client.post(str(client.base_url).rstrip("/"), json=batch)
    assert response.status_code == 200, response.text
    pages = [e["resource"] for e in response.json()["entry"]]
    assert [e["response"]["etag"] for e in pages[0]["entry"]] == ['W/"2"']
    assert [e["response"]["etag"] for e in pages[1]["entry"]] == ['W/"2"', 'W/"1"']
