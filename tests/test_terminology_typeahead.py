"""$expand `filter` (type-ahead) over ICD-10-CM (break-api F13): words match displays and
designations, not codes (unless the filter looks like a code), and the best matches come
first: the phrase, then all words whole, then prefixes.

On SQLite the whole shipped ICD-10-CM; on MongoDB (mongomock: no server here) its
diabetes block E08-E13 (583 concepts of the same release: mongomock checks unique indexes
by scanning, so loading all 98,000 concepts would take hours), loaded under the same url."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from storage_backends import close_backend, open_backend

from fhir_server.app import create_app
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore
from terminology.content import icd10cm
from terminology.model import CodeSystemHeader, Concept
from terminology.sqlite_store import SQLiteConceptStore
from terminology.store import Member, concept_store

pytestmark = pytest.mark.anyio

ICD = "http://hl7.org/fhir/sid/icd-10-cm"


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite-shipped"),
                        pytest.param("mongomock", id="mongomock-E08-E13")])  # fmt: skip
async def client(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    store, token = await open_backend(request.param, tmp_path)
    try:
        if request.param != "sqlite":
            header, rows = icd10cm()
            block = [c for c in rows if c.code == "E08-E13" or c.code[:3] in (
                "E08", "E09", "E10", "E11", "E13")]  # fmt: skip
            await concept_store(store).load_code_system(Context(), header, block,
                                                        keep_resource=False)  # fmt: skip
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://fhir.test/fhir/") as c:  # fmt: skip
            yield c
    finally:
        await close_backend(store, token)


async def _expand(client: httpx.AsyncClient, text: str, count: int = 20) -> tuple[int, list]:
    r = await client.get("ValueSet/$expand", params={"url": f"{ICD}?fhir_vs", "filter": text,
                                                     "count": str(count)})  # fmt: skip
    assert r.status_code == 200, r.text
    expansion = r.json()["expansion"]
    return expansion["total"], expansion.get("contains", [])


async def test_type_2_diabetes_lists_e11_first(client: httpx.AsyncClient) -> None:
    for text in ("type 2 diabetes", "diabetes type 2"):
        total, found = await _expand(client, text, 10)
        codes = [c["code"] for c in found]
        assert codes[0] == "E11", (text, codes)  # "Type 2 diabetes mellitus"
        assert all(c.startswith("E11") for c in codes[:8]), (text, codes)
    # "2" no longer matches the code E10.2 (Type 1 diabetes mellitus with kidney
    # complications): across the whole answer, no E10.2x, and E11 ahead of any E10
    total, everything = await _expand(client, "type 2 diabetes", 1000)
    codes = [c["code"] for c in everything]
    assert len(codes) == total
    assert not any(c.startswith("E10.2") for c in codes), codes
    assert "E11.9" in codes  # Type 2 diabetes mellitus without complications
    first_e10 = next((i for i, c in enumerate(codes) if c.startswith("E10")), len(codes))
    assert first_e10 > max(i for i, c in enumerate(codes) if c.startswith("E11"))


async def test_a_filter_that_looks_like_a_code_matches_codes(client: httpx.AsyncClient) -> None:
    total, found = await _expand(client, "E11.2")
    codes = {c["code"] for c in found}
    assert {"E11.2", "E11.21", "E11.22", "E11.29"} <= codes
    assert all(c.startswith("E11.2") for c in codes), codes
    # words still match words only: "diabetes" finds no code by its letters
    total, found = await _expand(client, "mellitus", 5)
    assert all("mellitus" in c["display"].casefold() for c in found)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(tmp_path / "fhir.db")
    try:
        yield opened
    finally:
        await opened.close()


async def test_an_index_of_an_earlier_release_is_rebuilt(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store  # the FTS5 table of an earlier release: SQLite only
    ctx = Context()
    header = CodeSystemHeader(url="http://example.org/cs", version=None, name="cs")
    concepts = concept_store(store)
    await concepts.load_code_system(ctx, header, [Concept("X1", "Type 2 diabetes"),
                                                  Concept("X2", "Type 1 diabetes")],
                                    keep_resource=False)  # fmt: skip
    async with store.transaction(ctx) as txn:  # the one-column index of before
        txn.connection.execute("DROP TABLE term_text")
        txn.connection.execute("CREATE VIRTUAL TABLE term_text USING fts5(text)")
        txn.connection.execute("INSERT INTO term_text (rowid, text) SELECT cid, code || ' ' || "
                               "display FROM term_concepts")  # fmt: skip
    fresh = SQLiteConceptStore(store)
    system = await fresh.system(ctx, "http://example.org/cs")
    assert system is not None
    members = [Member(cid) for cid in await fresh.select(ctx, system, [])]
    expansion = await fresh.save_expansion(ctx, "k", members)
    total, found = await fresh.expansion_page(ctx, expansion, text="2 diabetes")
    assert (total, [c.code for c in found]) == (1, ["X1"])
    total, found = await fresh.expansion_page(ctx, expansion, text="X2")  # the code column
    assert (total, [c.code for c in found]) == (1, ["X2"])


async def test_ranked_pages_add_up_to_the_whole_answer(client: httpx.AsyncClient) -> None:
    total, everything = await _expand(client, "diabetes type 2", 1000)
    paged: list[str] = []
    for offset in range(0, total, 37):
        r = await client.get("ValueSet/$expand", params={
            "url": f"{ICD}?fhir_vs", "filter": "diabetes type 2", "count": "37",
            "offset": str(offset)})
        assert r.json()["expansion"]["total"] == total
        paged += [c["code"] for c in r.json()["expansion"]["contains"]]
    assert paged == [c["code"] for c in everything]
    assert len(set(paged)) == total


async def test_mongodb_ranks_as_sqlite(tmp_path: Path) -> None:
    """The same ICD-10-CM block in both stores: every filter gives the same total and the
    same ranked codes, pages included (MongoDB ranks in Python what FTS5 ranks in SQL)."""
    header, rows = icd10cm()
    block = [c for c in rows if c.code == "E08-E13" or c.code[:3] in ("E10", "E11", "E13")]
    ctx = Context()
    answers = []
    for kind in ("sqlite", "mongomock"):
        store, token = await open_backend(kind, tmp_path)
        try:
            concepts = concept_store(store)
            await concepts.load_code_system(ctx, header, block, keep_resource=False)
            system = await concepts.system(ctx, ICD)
            assert system is not None
            cids = await concepts.select(ctx, system, [])
            whole = await concepts.save_expansion(ctx, "whole", [Member(c) for c in cids])
            holed = await concepts.save_expansion(ctx, "holed", [Member(c) for c in cids[1:]])
            seen = []
            for expansion in (whole, holed):
                for text in ("type 2 diabetes", "diabetes type 2", "E11.2", "e11", "mellitus",
                             "kidney compl", "diab w hyperosm", "Type 1 diabetes, Stage 2",
                             "ketoacidosis coma", "2 diabetes"):
                    for offset, count in ((0, 10), (15, 25)):
                        total, found = await concepts.expansion_page(
                            ctx, expansion, text=text, offset=offset, count=count)
                        seen.append((text, total, [c.code for c in found]))
            answers.append(seen)
        finally:
            await close_backend(store, token)
    assert answers[0] == answers[1]
    assert any(total > 25 for _, total, _ in answers[0])  # the second pages are not empty
