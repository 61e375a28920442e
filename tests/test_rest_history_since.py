"""History `_since` (R4 http.html#history) is an instant, which has seconds and a time
zone (datatypes.html#instant): one without a zone, or not an instant, is a 400 naming
_since rather than a guess at the moment meant."""

from __future__ import annotations

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
