"""History paging (R4 http.html#history): `_count=0` asks for the total only (as in
search.html#count) and the self link keeps the _count given."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


def _self_link(bundle: dict[str, Any]) -> str:
    return next(link["url"] for link in bundle["link"] if link["relation"] == "self")


@pytest.mark.parametrize("level", ["instance", "type", "system"])
async def test_history_count_zero_gives_the_total_only(
    client: httpx.AsyncClient, pid: str, level: str
) -> None:
    path = {"instance": f"Patient/{pid}/_history", "type": "Patient/_history",
            "system": "_history"}[level]  # fmt: skip
    response = await client.get(path, params={"_count": "0"})
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["total"] == 2  # the create and the update
    assert bundle.get("entry", []) == []
    assert "_count=0" in _self_link(bundle)
    assert "next" not in {link["relation"] for link in bundle["link"]}


async def test_history_count_of_a_superscript_digit_is_400(
    client: httpx.AsyncClient, pid: str
) -> None:
    response = await client.get("_history", params={"_count": "\u00b2"})
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["_count"]
