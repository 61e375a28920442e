"""Chained and reverse-chained search (R4 search.html#chaining, search.html#has), and
searches across several types (_type), through the ASGI app on a real SQLite file,
with exact expected result sets."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_graph import LOINC, RESOURCES

from fhir_server.errors import FHIRError
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore
from search.query import parse_search

pytestmark = pytest.mark.anyio


async def _ids(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> set[str]:
    response = await client.get(path, params={**params, "_count": "100"})
    assert response.status_code == 200, response.text
    bundle = response.json()
    ids = {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"}
    assert bundle["total"] == len(ids)
    return ids


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        pytest.param(
            "Observation",
            {"subject:Patient.name": "peter"},
            {"obs-1", "obs-3", "obs-5", "obs-6"},
            id="typed-chain",
        ),
        # subject targets Patient, Group, Device and Location: Location.name matches too
        pytest.param(
            "Observation",
            {"subject.name": "peter"},
            {"obs-1", "obs-3", "obs-4", "obs-5", "obs-6"},
            id="ambiguous-chain",
        ),
        pytest.param(
            "Observation", {"subject:Location.name": "peter"}, {"obs-4"}, id="location-chain"
        ),
        pytest.param(
            "Observation",
            {"subject:Patient.family:exact": "Smith"},
            {"obs-3"},
            id="chain-with-modifier",
        ),
        pytest.param(
            "Observation", {"encounter.service-provider.name": "acme"}, {"obs-2"}, id="two-levels"
        ),
        pytest.param(
            "Observation",
            {"subject:Patient.organization.partof.name": "good"},
            {"obs-2"},
            id="three-levels",
        ),
        pytest.param(
            "Observation",
            {"subject:Patient.name": "peter", "code": "718-7"},
            {"obs-1", "obs-3"},
            id="chain-and-token",
        ),
        pytest.param("Observation", {"subject:Patient.name": "nobody"}, set(), id="no-match"),
        pytest.param(
            "Observation",
            {"subject:Patient._id": "pat-anna,pat-smith"},
            {"obs-2", "obs-3"},
            id="chain-to-id",
        ),
        pytest.param(
            "Patient",
            {"_has:Observation:patient:code": "718-7"},
            {"pat-peter", "pat-smith"},
            id="has",
        ),
        pytest.param(
            "Patient",
            {"_has:Observation:patient:code": f"{LOINC}|8867-4"},
            {"pat-anna"},
            id="has-system-code",
        ),
        pytest.param(
            "Patient",
            {"_has:Observation:patient:_has:DiagnosticReport:result:status": "final"},
            {"pat-anna"},
            id="nested-has",
        ),
        pytest.param(
            "Organization",
            {"_has:Encounter:service-provider:subject:Patient.name": "anna"},
            {"org-acme"},
            id="has-then-chain",
        ),
        pytest.param(
            "Organization",
            {"_has:Patient:organization:name": "peter"},
            {"org-good"},
            id="has-organization",
        ),
        pytest.param(
            "Observation",
            {"subject:Patient._has:Encounter:patient:class": "IMP"},
            {"obs-2"},
            id="chain-then-has",
        ),
        pytest.param(
            # the ambiguous chain searches only the targets that an Encounter can refer to
            "Observation",
            {"subject._has:Encounter:patient:class": "AMB"},
            {"obs-1", "obs-5", "obs-6"},
            id="ambiguous-chain-then-has",
        ),
        pytest.param(
            "Patient",
            {"_has:Observation:patient:code": "718-7", "_has:Encounter:patient:class": "AMB"},
            {"pat-peter"},
            id="two-has-and",
        ),
    ],
)
async def test_chain_result_sets(
    graph: httpx.AsyncClient, path: str, params: dict[str, str], expected: set[str]
) -> None:
    assert await _ids(graph, path, params) == expected


async def test_chain_skips_deleted_targets(graph: httpx.AsyncClient) -> None:
    assert (await graph.delete("Patient/pat-smith")).status_code in (200, 204)
    assert await _ids(graph, "Observation", {"subject:Patient.name": "peter"}) == {
        "obs-1",
        "obs-5",
        "obs-6",
    }
    assert await _ids(graph, "Patient", {"_has:Observation:patient:code": "718-7"}) == {"pat-peter"}


async def test_chain_through_post_search(graph: httpx.AsyncClient) -> None:
    response = await graph.post(
        "Observation/_search", data={"encounter.service-provider.name": "good"}
    )
    assert response.status_code == 200
    assert {e["resource"]["id"] for e in response.json()["entry"]} == {"obs-1"}


async def test_links_keep_the_chain(graph: httpx.AsyncClient) -> None:
    bundle = (
        await graph.get("Observation", params={"subject:Patient.name": "peter", "_count": "1"})
    ).json()
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    for relation in ("self", "first", "next", "last"):
        assert "subject%3APatient.name=peter" in links[relation], relation
    seen: list[str] = []
    url: str | None = links["first"]
    while url:
        page = (await graph.get(url)).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        url = {link["relation"]: link["url"] for link in page["link"]}.get("next")
    assert sorted(seen) == ["obs-1", "obs-3", "obs-5", "obs-6"]


@pytest.mark.parametrize(
    ("path", "name", "value", "fragment"),
    [
        pytest.param("Patient", "name.family", "Chalmers", "cannot chain", id="non-reference"),
        pytest.param("Observation", "code.text", "x", "cannot chain", id="token-chain"),
        pytest.param(
            "Observation", "subject:Patient.shoe-size", "42", "shoe-size", id="unknown-at-end"
        ),
        pytest.param(
            "Observation",
            "subject:Patient.birthdate",
            "2024-13-45",
            "birthdate",
            id="bad-value-at-end",
        ),
        pytest.param(
            "Observation", "subject:Medication.code", "x", "not a target", id="not-a-target"
        ),
        pytest.param("Observation", "subject.", "x", "ends without", id="empty-tail"),
        pytest.param(
            "Observation",
            "subject:Patient.organization.partof.partof.partof.name",
            "x",
            "more than 4",
            id="too-deep",
        ),
        pytest.param(
            "Patient", "_has:Observation:code:status", "final", "reference", id="has-non-reference"
        ),
        pytest.param(
            "Patient",
            "_has:Observation:encounter:status",
            "final",
            "cannot refer",
            id="has-wrong-target",
        ),
        pytest.param(
            "Patient",
            "_has:Nonsense:patient:code",
            "x",
            "unknown resource type",
            id="has-unknown-type",
        ),
        pytest.param("Patient", "_has:Observation:patient", "x", "_has:[type]", id="has-short"),
        pytest.param(
            "Patient",
            "_has:Observation:patient:_has:Observation:patient:_has:"
            "Observation:patient:_has:Observation:patient:_has:Observation:patient:code",
            "x",
            "more than 4",
            id="has-too-deep",
        ),
    ],
)
async def test_bad_chains_are_400_naming_the_parameter(
    graph: httpx.AsyncClient, path: str, name: str, value: str, fragment: str
) -> None:
    response = await graph.get(path, params={name: value})
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["expression"] == [name]
    assert fragment in issue["diagnostics"]
    if len(value) > 2:
        assert value not in response.text


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param(
            {"_type": "Patient,Location", "name": "peter"},
            {"pat-peter", "pat-smith", "loc-1"},
            id="shared-name",
        ),
        pytest.param(
            {"_type": "Observation,DiagnosticReport", "subject": "Patient/pat-anna"},
            {"obs-2", "dr-1"},
            id="shared-reference",
        ),
        pytest.param(
            {"_type": "Observation,DiagnosticReport", "code": "718-7"},
            {"obs-1", "obs-3", "dr-2"},
            id="shared-token",
        ),
        pytest.param(
            {"_type": "Organization,Location", "_id": "org-good,loc-1,pat-anna"},
            {"org-good", "loc-1"},
            id="common-param",
        ),
        pytest.param({"_type": "Encounter"}, {"enc-1", "enc-2"}, id="one-type"),
        pytest.param({"_type": "Encounter", "class": "IMP"}, {"enc-2"}, id="one-type-own-param"),
        pytest.param(
            {"_type": "Observation,Encounter", "subject:Patient.name": "anna"},
            {"obs-2", "enc-2"},
            id="chain-on-shared-param",
        ),
    ],
)
async def test_system_search_with_type(
    graph: httpx.AsyncClient, params: dict[str, str], expected: set[str]
) -> None:
    assert await _ids(graph, "http://fhir.test/fhir", params) == expected


async def test_system_search_type_is_kept_in_links(graph: httpx.AsyncClient) -> None:
    bundle = (
        await graph.get(
            "http://fhir.test/fhir", params={"_type": "Patient,Location", "name": "peter"}
        )
    ).json()
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert self_link.startswith("http://fhir.test/fhir?_type=Patient%2CLocation")
    assert "name=peter" in self_link


async def test_system_search_unknown_type_is_400(graph: httpx.AsyncClient) -> None:
    response = await graph.get("http://fhir.test/fhir", params={"_type": "Patient,Spaceship"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["_type"]


async def test_system_search_through_post(graph: httpx.AsyncClient) -> None:
    response = await graph.post(
        "http://fhir.test/fhir/_search", data={"_type": "Patient,Location", "name": "peter"}
    )
    assert response.status_code == 200, response.text
    assert {e["resource"]["id"] for e in response.json()["entry"]} == {
        "pat-peter",
        "pat-smith",
        "loc-1",
    }


_LINK_NAMES = st.sampled_from(
    [
        "subject.name", "subject:Patient.name", "subject:Patient.name:exact", "subject.",
        "subject:Patient.organization.name", "subject:Patient.birthdate", "code.text",
        "encounter.service-provider.partof.name", "subject:Spaceship.name", "patient._id",
        "_has:Observation:patient:code", "_has:Observation:patient:_has:DiagnosticReport:result:status",
        "_has:Observation:code:status", "_has:", "_has", "_has:Observation", "subject:Patient.x.y",
        "_include", "_include:iterate", "_revinclude", "_summary", "_elements", "_contained",
        "_type", "subject:Patient._has:Observation:patient:code", "focus.name", "name",
    ]
)  # fmt: skip
_LINK_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["peter", "Observation:subject", "Patient:*", "*", "true", "count", "name,gender",
         "718-7", "ge2020", "Patient/pat-peter", "Patient,Observation", "Spaceship", ":", "a:b:c:d"]
    ),
)  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=st.lists(st.tuples(_LINK_NAMES, _LINK_VALUES), max_size=3))
def test_any_link_input_is_a_result_or_a_400(
    tmp_path_factory: pytest.TempPathFactory, params: list[tuple[str, str]]
) -> None:
    """Random chains, _has, includes and result parameters on Observation: a page of
    results or a 400 naming a parameter, never another error."""
    try:
        query = parse_search("Observation", params)
    except FHIRError as error:
        assert error.status == 400
        assert error.issues and error.issues[0].expression
        return
    store = _fuzz_store(tmp_path_factory)
    page = store._search(store._reader, Context(), query)
    assert page.total is None or len(page.resources) <= page.total


_STORES: dict[str, SQLiteStore] = {}


def _fuzz_store(tmp_path_factory: pytest.TempPathFactory) -> SQLiteStore:
    """One store with the graph, shared by the examples (read only)."""
    path = tmp_path_factory.getbasetemp() / "chain-fuzz.db"
    if str(path) not in _STORES:

        async def load() -> SQLiteStore:
            store = await SQLiteStore.open(path)
            async with store.transaction(Context()) as txn:
                for resource in RESOURCES:
                    await txn.update(resource)
            return store

        _STORES[str(path)] = asyncio.run(load())
    return _STORES[str(path)]
