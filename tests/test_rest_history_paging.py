"""History paging stays stable while others write (R4 http.html#history): the page
links carry the number of versions there were when the first page was read, and later
pages count from there, so a write between two page requests neither repeats nor skips
an entry. `_at` and `_list` are refused (not supported), unknown parameters too under
Prefer: handling=strict."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((x["url"] for x in bundle["link"] if x["relation"] == relation), None)


@pytest.mark.parametrize("path", ["Patient/_history", "_history"])
async def test_pages_neither_repeat_nor_skip_while_others_write(
    client: httpx.AsyncClient, path: str
) -> None:
    for n in range(12):
        created = await client.post("Patient", json={"resourceType": "Patient",
                                                     "name": [{"family": f"F{n}"}]})
        assert created.status_code == 201
    seen: list[str] = []
    url: str | None = f"{path}?_count=5"
    pages = 0
    while url is not None:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["total"] == 12  # the history as it was when paging began
        seen += [e["fullUrl"] + e["response"]["etag"] for e in bundle.get("entry", [])]
        # a write between every two page requests (a new version at the top)
        await client.post("Patient", json={"resourceType": "Patient"})
        url = _link(bundle, "next")
        pages += 1
    assert pages == 3
    assert len(seen) == 12 == len(set(seen))


async def test_at_and_list_are_refused(client: httpx.AsyncClient, pid: str) -> None:
    for name, value in (("_at", "2026"), ("_list", "x")):
        response = await client.get("_history", params={name: value})
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == [name]


async def test_unknown_parameter_strict_400_lenient_ignored(
    client: httpx.AsyncClient, pid: str
) -> None:
    strict = await client.get(f"Patient/{pid}/_history", params={"_sort": "bogus"},
                              headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400, strict.text
    assert strict.json()["issue"][0]["expression"] == ["_sort"]
    lenient = await client.get(f"Patient/{pid}/_history", params={"_sort": "bogus"})
    assert lenient.status_code == 200
    assert "_sort" not in (_link(lenient.json(), "self") or "")
