"""_include and _revinclude (R4 search.html#include), with :iterate, `*` and cycles,
through the ASGI app on a real SQLite file."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from fhir_server.storage import sqlite_graph
from fhir_server.storage.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def _entries(bundle: dict[str, Any], mode: str) -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle["entry"]
        if e["search"]["mode"] == mode
    ]


async def _search(client: httpx.AsyncClient, path: str, params: list[tuple[str, str]]) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("path", "params", "matches", "included"),
    [
        pytest.param(
            "Observation",
            [("code", "718-7"), ("_include", "Observation:subject")],
            {"Observation/obs-1", "Observation/obs-3"},
            {"Patient/pat-peter", "Patient/pat-smith"},
            id="include",
        ),
        pytest.param(
            "Observation",
            [("code", "718-7"), ("_include", "Observation:subject:Location")],
            {"Observation/obs-1", "Observation/obs-3"},
            set(),
            id="include-other-target",
        ),
        pytest.param(
            "Observation",
            [("code", "8867-4"), ("_include", "Observation:subject:Location")],
            {"Observation/obs-2", "Observation/obs-4"},
            {"Location/loc-1"},
            id="include-target",
        ),
        pytest.param(
            "Observation",
            [
                ("_id", "obs-1"),
                ("_include", "Observation:subject"),
                ("_include", "Observation:encounter"),
            ],
            {"Observation/obs-1"},
            {"Patient/pat-peter", "Encounter/enc-1"},
            id="two-includes",
        ),
        pytest.param(
            "Observation",
            [("_id", "obs-1"), ("_include", "Observation:*")],
            # subject and patient both point at pat-peter: it comes once
            {"Observation/obs-1"},
            {"Patient/pat-peter", "Encounter/enc-1"},
            id="wildcard",
        ),
        pytest.param(
            "Patient",
            [("_id", "pat-peter"), ("_revinclude", "Observation:subject")],
            {"Patient/pat-peter"},
            {"Observation/obs-1", "Observation/obs-5", "Observation/obs-6"},
            id="revinclude",
        ),
        pytest.param(
            "Patient",
            [
                ("_id", "pat-peter,pat-anna"),
                ("_revinclude", "Encounter:subject"),
                ("_revinclude", "DiagnosticReport:subject"),
            ],
            {"Patient/pat-peter", "Patient/pat-anna"},
            {"Encounter/enc-1", "Encounter/enc-2", "DiagnosticReport/dr-1"},
            id="two-revincludes",
        ),
        pytest.param(
            "Organization",
            [("_id", "org-good"), ("_revinclude", "Patient:*")],
            {"Organization/org-good"},
            {"Patient/pat-peter"},
            id="revinclude-wildcard",
        ),
        pytest.param(
            # Patient.link goes both ways: the cycle ends because nothing is added twice
            "Patient",
            [("_id", "pat-peter"), ("_include:iterate", "Patient:link")],
            {"Patient/pat-peter"},
            {"Patient/pat-anna"},
            id="iterate-link-cycle",
        ),
        pytest.param(
            "Observation",
            [("_id", "obs-5"), ("_include:iterate", "Observation:has-member")],
            {"Observation/obs-5"},
            {"Observation/obs-6"},
            id="iterate-has-member-cycle",
        ),
        pytest.param(
            # DiagnosticReport -> Observation (result) -> Encounter -> Organization
            "DiagnosticReport",
            [
                ("_id", "dr-1"),
                ("_include", "DiagnosticReport:result"),
                ("_include:iterate", "Observation:encounter"),
                ("_include:iterate", "Encounter:service-provider"),
                ("_include:iterate", "Organization:partof"),
            ],
            {"DiagnosticReport/dr-1"},
            {
                "Observation/obs-2",
                "Encounter/enc-2",
                "Organization/org-acme",
                "Organization/org-good",
            },
            id="iterate-chain-of-includes",
        ),
        pytest.param(
            # without :iterate an include applies to the matches only
            "DiagnosticReport",
            [
                ("_id", "dr-1"),
                ("_include", "DiagnosticReport:result"),
                ("_include", "Observation:encounter"),
            ],
            {"DiagnosticReport/dr-1"},
            {"Observation/obs-2"},
            id="no-iterate",
        ),
        pytest.param(
            "Patient",
            [
                ("_id", "pat-anna"),
                ("_revinclude:iterate", "Observation:subject"),
                ("_revinclude:iterate", "DiagnosticReport:result"),
            ],
            {"Patient/pat-anna"},
            {"Observation/obs-2", "DiagnosticReport/dr-1"},
            id="revinclude-iterate",
        ),
        pytest.param(
            # a match is never repeated as an include
            "Patient",
            [("_include", "Patient:link")],
            {"Patient/pat-peter", "Patient/pat-anna", "Patient/pat-smith"},
            set(),
            id="match-not-repeated",
        ),
        pytest.param(
            # a bare * follows every reference parameter of every type in the result
            "DiagnosticReport",
            [("_id", "dr-1"), ("_include:iterate", "*")],
            {"DiagnosticReport/dr-1"},
            {
                "Patient/pat-anna",
                "Observation/obs-2",
                "Encounter/enc-2",
                "Organization/org-acme",
                "Organization/org-good",
                "Patient/pat-peter",
            },
            id="bare-star-iterate",
        ),
    ],
)
async def test_include_result_sets(
    graph: httpx.AsyncClient,
    path: str,
    params: list[tuple[str, str]],
    matches: set[str],
    included: set[str],
) -> None:
    bundle = await _search(graph, path, params)
    found_matches, found_included = _entries(bundle, "match"), _entries(bundle, "include")
    assert set(found_matches) == matches
    assert set(found_included) == included
    assert len(found_included) == len(included)  # each resource once
    assert bundle["total"] == len(matches)  # total counts the matches only


async def test_included_entries_follow_the_matches(graph: httpx.AsyncClient) -> None:
    bundle = await _search(
        graph, "Observation", [("_id", "obs-1"), ("_include", "Observation:subject")]
    )
    assert [e["search"]["mode"] for e in bundle["entry"]] == ["match", "include"]
    included = bundle["entry"][1]
    assert included["fullUrl"] == "http://fhir.test/fhir/Patient/pat-peter"
    assert included["resource"]["name"][0]["family"] == "Chalmers"


async def test_deleted_resources_are_not_included(graph: httpx.AsyncClient) -> None:
    await graph.delete("Patient/pat-smith")
    bundle = await _search(
        graph, "Observation", [("_id", "obs-3"), ("_include", "Observation:subject")]
    )
    assert _entries(bundle, "include") == []


async def test_include_is_kept_in_the_links(graph: httpx.AsyncClient) -> None:
    bundle = await _search(
        graph,
        "Observation",
        [("code", "718-7"), ("_include:iterate", "Observation:subject"), ("_count", "1")],
    )
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert "_include%3Aiterate=Observation%3Asubject" in links["self"]
    assert "_include%3Aiterate=Observation%3Asubject" in links["next"]
    page2 = (await graph.get(links["next"])).json()
    assert len(_entries(page2, "match")) == 1
    assert len(_entries(page2, "include")) == 1


async def test_include_through_post_search(graph: httpx.AsyncClient) -> None:
    response = await graph.post(
        "Patient/_search", data={"_id": "pat-peter", "_revinclude": "Encounter:subject"}
    )
    assert response.status_code == 200
    assert _entries(response.json(), "include") == ["Encounter/enc-1"]


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        pytest.param("_include", "Observation:code", "not a reference", id="not-reference"),
        pytest.param("_include", "Observation:nothing", "no search parameter", id="unknown"),
        pytest.param("_include", "Spaceship:subject", "unknown resource type", id="bad-type"),
        pytest.param("_include", "Observation:subject:Medication", "not a target", id="bad-target"),
        pytest.param("_include", "Observation", "[type]:[parameter]", id="no-parameter"),
        pytest.param("_revinclude", "*", "source type", id="bare-star-revinclude"),
        pytest.param("_revinclude:deep", "Observation:subject", ":iterate", id="bad-modifier"),
        pytest.param("_summary", "maybe", "true, text, data", id="bad-summary"),
        pytest.param("_contained", "sometimes", "false, true or both", id="bad-contained"),
        pytest.param("_containedType", "inner", "container or contained", id="bad-contained-type"),
    ],
)
async def test_bad_result_parameters_are_400(
    graph: httpx.AsyncClient, name: str, value: str, fragment: str
) -> None:
    response = await graph.get("Observation", params={name: value})
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [name]
    assert fragment in issue["diagnostics"]


async def test_include_on_a_page_of_100_is_one_query_per_include(
    client: httpx.AsyncClient, store: SQLiteStore
) -> None:
    """100 Observations of 100 Patients: the include of a full page is one SQL query,
    not one per resource, and takes tens of ms."""
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    for n in range(100):
        bundle["entry"].append(
            {
                "resource": {"resourceType": "Patient", "id": f"p{n}"},
                "request": {"method": "PUT", "url": f"Patient/p{n}"},
            }
        )
        bundle["entry"].append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": f"o{n}",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": f"Patient/p{n}"},
                },
                "request": {"method": "PUT", "url": f"Observation/o{n}"},
            }
        )
    assert (await client.post("http://fhir.test/fhir", json=bundle)).status_code == 200
    params = [("_count", "100"), ("_include", "Observation:subject")]
    await _search(client, "Observation", params)  # warm up
    statements: list[str] = []
    store._reader.set_trace_callback(statements.append)
    started = time.perf_counter()
    result = await _search(client, "Observation", params)
    elapsed = time.perf_counter() - started
    store._reader.set_trace_callback(None)
    assert sum("JOIN resources s" in sql for sql in statements) == 1
    assert len(_entries(result, "match")) == 100
    assert len(_entries(result, "include")) == 100
    assert elapsed < 0.5, elapsed  # generous for CI; typically ~15 ms


async def test_a_capped_include_says_so_in_an_outcome_entry(
    graph: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_graph, "MAX_INCLUDED", 2)
    bundle = await _search(
        graph, "Patient", [("_id", "pat-peter"), ("_revinclude", "Observation:subject")]
    )
    assert len(_entries(bundle, "include")) == 2
    outcome = bundle["entry"][-1]
    assert outcome["search"] == {"mode": "outcome"}
    assert outcome["resource"]["issue"][0]["severity"] == "warning"
    assert outcome["resource"]["issue"][0]["code"] == "too-costly"


async def test_capability_statement_lists_includes_and_the_compartment(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("metadata")).json()
    rest = statement["rest"][0]
    assert rest["compartment"] == [
        f"http://hl7.org/fhir/CompartmentDefinition/{code}"
        for code in ("device", "encounter", "patient", "practitioner", "relatedPerson")
    ]
    by_type = {entry["type"]: entry for entry in rest["resource"]}
    observation = by_type["Observation"]
    assert {"*", "Observation:*", "Observation:subject", "Observation:has-member"} <= set(
        observation["searchInclude"]
    )
    assert "Observation:code" not in observation["searchInclude"]
    patient = by_type["Patient"]
    assert {"Observation:subject", "Encounter:subject", "Patient:link"} <= set(
        patient["searchRevInclude"]
    )
    assert "Observation:encounter" not in patient["searchRevInclude"]
