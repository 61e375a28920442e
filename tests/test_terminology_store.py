"""The concept store on a real SQLite file and on MongoDB (mongomock; a real server when
FHIR_FUSION_TEST_MONGODB is set): loading (batches, replacement), type-ahead
text (case, accents, ideographs), paging of expansions, version pinning, activeOnly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from terminology_backends import store  # noqa: F401 - the fixture, over both backends

from fhir_server.storage.base import Context, ResourceStore
from search.query import parse_search
from terminology import store as store_module
from terminology.expand import ExpandRequest, Pins, expand
from terminology.model import CodeSystemHeader, Concept, Designation
from terminology.service import terminology_service
from terminology.store import Filter, concept_store

pytestmark = pytest.mark.anyio
CTX = Context()
URL = "http://example.org/fhir/CodeSystem/lab"


def _concepts(n: int) -> Iterator[Concept]:
    for i in range(n):
        yield Concept(f"C{i:05d}", f"Analyte {i:05d}", parents=("C00000",) if i else (),
                      active=i % 10 != 3)  # fmt: skip


async def test_load_in_batches_with_progress_and_replace(
    store: ResourceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "BATCH", 100)
    import terminology.concept_rules as concept_rules  # the load loop of both backends
    import terminology.sqlite_store as sqlite_store  # its deletion of a dropped load

    monkeypatch.setattr(concept_rules, "BATCH", 100)
    monkeypatch.setattr(sqlite_store, "BATCH", 100)
    seen: list[int] = []
    concepts = concept_store(store)
    header = CodeSystemHeader(URL, "1", "Lab", content="fragment")
    summary = await concepts.load_code_system(CTX, header, _concepts(250), progress=seen.append)
    assert (summary.concepts, summary.replaced) == (250, False)
    assert seen == [100, 200, 250]
    again = await concepts.load_code_system(CTX, header, _concepts(20))
    assert (again.concepts, again.replaced) == (20, True)
    system = await concepts.system(CTX, URL, "1")
    assert system is not None and system.count == 20
    assert await concepts.concept(CTX, system, "C00100") is None
    # the load is kept as a searchable CodeSystem resource, content fragment, no concepts
    page = await store.search(CTX, parse_search("CodeSystem", [("url", URL), ("version", "1")]))
    (resource,) = [r.resource for r in page.resources]
    assert resource is not None
    assert (resource["content"], resource["name"], resource["count"]) == ("fragment", "Lab", 20)
    assert "concept" not in resource


async def test_a_failed_load_leaves_the_previous_one(store: ResourceStore) -> None:
    concepts = concept_store(store)
    header = CodeSystemHeader(URL, None, "Lab")
    await concepts.load_code_system(CTX, header, _concepts(5))

    def broken() -> Iterator[Concept]:
        yield Concept("X", "x")
        raise ValueError("bad row")

    with pytest.raises(ValueError):
        await concepts.load_code_system(CTX, header, broken())
    system = await concepts.system(CTX, URL)
    assert system is not None and system.count == 5


async def test_async_iterable_and_repeated_code(store: ResourceStore) -> None:
    async def rows():  # type: ignore[no-untyped-def]
        yield Concept("A", "first")
        yield Concept("A", "second")

    summary = await concept_store(store).load_code_system(
        CTX, CodeSystemHeader(URL, None, "Lab"), rows()
    )
    system = await concept_store(store).system(CTX, URL)
    assert system is not None and summary.concepts == 1
    detail = await concept_store(store).concept(CTX, system, "A")
    assert detail is not None and detail.concept.display == "second"


async def _expansion_codes(store: ResourceStore, request: ExpandRequest, compose: dict) -> tuple[
    int, list[str]
]:
    vs = {"resourceType": "ValueSet", "url": "http://example.org/vs", "compose": compose}
    out = await expand(terminology_service(store), CTX, vs, request)
    return out["expansion"]["total"], [c["code"] for c in out["expansion"].get("contains", [])]


async def test_paging_covers_every_concept_once(store: ResourceStore) -> None:
    await concept_store(store).load_code_system(
        CTX, CodeSystemHeader(URL, None, "Lab"), _concepts(1000)
    )
    compose = {"include": [{"system": URL}]}
    seen: list[str] = []
    for offset in range(0, 1000, 97):
        total, codes = await _expansion_codes(
            store, ExpandRequest(offset=offset, count=97), compose
        )
        assert total == 1000
        seen.extend(codes)
    assert seen == [f"C{i:05d}" for i in range(1000)]
    # with a filter and activeOnly, pages partition the filtered total
    active = [f"C{i:05d}" for i in range(1000) if i % 10 != 3 and str(i).zfill(5).startswith("001")]
    total, first = await _expansion_codes(
        store, ExpandRequest(text="analyte 001", active_only=True, count=50), compose
    )
    _, rest = await _expansion_codes(
        store, ExpandRequest(text="analyte 001", active_only=True, offset=50, count=50), compose
    )
    assert total == len(active) == 90
    assert first + rest == active


async def test_filters_is_a_regex_and_exclude(store: ResourceStore) -> None:
    concepts = concept_store(store)
    await concepts.load_code_system(CTX, CodeSystemHeader(URL, None, "Lab"), _concepts(30))
    system = await concepts.system(CTX, URL)
    assert system is not None
    assert len(await concepts.select(CTX, system, [Filter("concept", "is-a", "C00000")])) == 30
    assert len(await concepts.select(CTX, system, [Filter("concept", "descendent-of",
                                                          "C00000")])) == 29  # fmt: skip
    regex = await concepts.select(CTX, system, [Filter("code", "regex", "C0001[0-4]")])
    assert len(regex) == 5
    compose = {"include": [{"system": URL, "filter": [
        {"property": "code", "op": "in", "value": "C00001,C00002,C00003"}]}],
        "exclude": [{"system": URL, "concept": [{"code": "C00002"}]}]}  # fmt: skip
    assert await _expansion_codes(store, ExpandRequest(), compose) == (2, ["C00001", "C00003"])


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("gluc", ["GLU"]),
        ("GLUCOSE SER", ["GLU"]),
        ("cafe", ["CAF"]),  # accents folded: Café
        ("血糖", ["GLU"]),  # ideographs in order, anywhere in the designation
        ("糖血", []),
        ("葡萄", ["GLU"]),
        ("glu-", ["GLU"]),
        ("xyz", []),
    ],
)
async def test_type_ahead_text(store: ResourceStore, text: str, codes: list[str]) -> None:
    rows = [
        Concept("GLU", "Glucose [Mass/volume] in Serum or Plasma",
                designations=(Designation("血清葡萄糖（空腹血糖）", "zh-CN"),)),
        Concept("CAF", "Café au lait spots"),
    ]  # fmt: skip
    await concept_store(store).load_code_system(CTX, CodeSystemHeader(URL, None, "Lab"), rows)
    assert (await _expansion_codes(store, ExpandRequest(text=text),
                                   {"include": [{"system": URL}]}))[1] == codes  # fmt: skip


async def test_version_pinning(store: ResourceStore) -> None:
    concepts = concept_store(store)
    await concepts.load_code_system(CTX, CodeSystemHeader(URL, "1", "Lab"), [Concept("OLD", "o")])
    await concepts.load_code_system(CTX, CodeSystemHeader(URL, "2", "Lab"), [Concept("NEW", "n")])
    compose = {"include": [{"system": URL}]}
    assert (await _expansion_codes(store, ExpandRequest(), compose))[1] == ["NEW"]
    pinned = ExpandRequest(pins=Pins(default={URL: "1"}))
    assert (await _expansion_codes(store, pinned, compose))[1] == ["OLD"]
    in_compose = {"include": [{"system": URL, "version": "1"}]}
    forced = ExpandRequest(pins=Pins(force={URL: "2"}))
    assert (await _expansion_codes(store, forced, in_compose))[1] == ["NEW"]


async def test_display_language(store: ResourceStore) -> None:
    rows = [Concept("HR", "Heart rate", designations=(Designation("心率", "zh-CN"),
                                                      Designation("Herzfrequenz", "de")))]
    await concept_store(store).load_code_system(CTX, CodeSystemHeader(URL, None, "Lab"), rows)
    vs = {"resourceType": "ValueSet", "compose": {"include": [{"system": URL}]}}
    for language, display in (("zh", "心率"), ("de-CH,de;q=0.8", "Herzfrequenz"),
                              ("fr", "Heart rate"), (None, "Heart rate")):
        out = await expand(terminology_service(store), CTX, vs, ExpandRequest(language=language))
        assert out["expansion"]["contains"][0]["display"] == display


async def test_type_ahead_pages_agree_between_index_and_member_list(store: ResourceStore) -> None:
    # a whole code system is answered from the FTS5 index alone; excluding one concept makes
    # the expansion a member list probed per hit: both give the same totals and pages
    await concept_store(store).load_code_system(
        CTX, CodeSystemHeader(URL, None, "Lab"), _concepts(1000)
    )
    whole = {"include": [{"system": URL}]}
    holed = {"include": [{"system": URL}], "exclude": [{"system": URL,
                                                        "concept": [{"code": "C00500"}]}]}
    for text in ("analyte 002", "analyte 01", "009", "c0003"):  # none matches C00500
        for offset, count in ((0, 20), (40, 7), (990, 50)):
            request = ExpandRequest(text=text, offset=offset, count=count)
            assert await _expansion_codes(store, request, whole) == await _expansion_codes(
                store, request, holed
            ), (text, offset, count)
    total, codes = await _expansion_codes(store, ExpandRequest(text="analyte", count=3), whole)
    assert (total, codes) == (1000, ["C00000", "C00001", "C00002"])
