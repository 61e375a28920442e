"""The `last` link of a searchset (R4 http.html#paging) pages by _offset, which the
server accepts up to search.query.MAX_OFFSET: beyond that it would be a link to a 400,
so it is left out (next links page by cursor and always work)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fhir_server.views import search_links
from search.query import MAX_OFFSET

URL = "http://fhir.test/fhir/Patient"


def _relations(total: int, count: int) -> dict[str, str]:
    links = search_links(URL, [("family", "x")], count, 0, total, count, next_cursor="c1")
    return {link["relation"]: link["url"] for link in links}


def test_last_link_within_the_offset_bound() -> None:
    links = _relations(total=95, count=10)
    assert parse_qs(urlsplit(links["last"]).query)["_offset"] == ["90"]


def test_no_last_link_beyond_the_offset_bound() -> None:
    links = _relations(total=MAX_OFFSET * 3, count=10)
    assert "last" not in links
    assert "_cursor=c1" in links["next"]
