"""Search over HTTP (R4 search.html): searchset Bundles, paging links, POST _search."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from rest_examples import patient

pytestmark = pytest.mark.anyio

FAMILIES = ("Chalmers", "Chalmers", "Windsor", "Chalmers", "Levin")


@pytest.fixture
async def patients(client: httpx.AsyncClient) -> list[str]:
    ids = []
    for n, family in enumerate(FAMILIES):
        resource = patient(name=[{"family": family, "given": [f"P{n}"]}],
                           identifier=[{"system": "urn:mrn", "value": f"MRN-{n}"}])
        response = await client.post("Patient", json=resource)
        assert response.status_code == 201
        ids.append(response.json()["id"])
    return ids


async def test_search_returns_a_searchset_with_total_and_match_entries(
    client: httpx.AsyncClient, patients: list[str]
) -> None:
    response = await client.get("Patient", params={"family": "chalmers"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    bundle = response.json()
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 3
    assert {e["resource"]["id"] for e in bundle["entry"]} == {patients[0], patients[1], patients[3]}
    for entry in bundle["entry"]:
        assert entry["search"] == {"mode": "match"}
        assert entry["fullUrl"] == f"http://fhir.test/fhir/Patient/{entry['resource']['id']}"


async def test_search_by_identifier_token(client: httpx.AsyncClient, patients: list[str]) -> None:
    bundle = (await client.get("Patient", params={"identifier": "urn:mrn|MRN-2"})).json()
    assert bundle["total"] == 1
    assert bundle["entry"][0]["resource"]["id"] == patients[2]


async def test_paging_follows_next_links_to_the_end(
    client: httpx.AsyncClient, patients: list[str]
) -> None:
    url: str | None = "http://fhir.test/fhir/Patient?_count=2"
    seen: list[str] = []
    pages = 0
    while url:
        bundle = (await client.get(url)).json()
        assert bundle["total"] == 5
        seen += [e["resource"]["id"] for e in bundle["entry"]]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        self_params = dict(parse_qsl(urlsplit(links["self"]).query))
        assert self_params["_count"] == "2"
        url = links.get("next")
        pages += 1
    assert pages == 3
    assert sorted(seen) == sorted(patients)


async def test_next_link_keeps_the_search_parameters(
    client: httpx.AsyncClient, patients: list[str]
) -> None:
    bundle = (await client.get("Patient", params={"family": "Chalmers", "_count": "1"})).json()
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert urlsplit(links["next"]).path == "/fhir/Patient"
    params = parse_qsl(urlsplit(links["next"]).query)
    assert ("family", "Chalmers") in params
    assert ("_count", "1") in params
    # the next page is named by the keyset cursor the store handed out (search.cursor)
    assert [k for k, _ in params].count("_cursor") == 1
    second = (await client.get(links["next"])).json()
    assert second["entry"][0]["resource"]["id"] != bundle["entry"][0]["resource"]["id"]


async def test_post_search_takes_a_form_body(
    client: httpx.AsyncClient, patients: list[str]
) -> None:
    response = await client.post("Patient/_search", data={"family": "Windsor"})
    assert response.status_code == 200
    assert response.json()["total"] == 1
    assert response.json()["entry"][0]["resource"]["id"] == patients[2]


async def test_post_search_with_json_body_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post("Patient/_search", json={"family": "Windsor"})
    assert response.status_code == 415


async def test_unknown_parameter_is_ignored_unless_strict(
    client: httpx.AsyncClient, patients: list[str]
) -> None:
    lenient = await client.get("Patient", params={"shoe-size": "42"})
    assert lenient.status_code == 200
    assert lenient.json()["total"] == 5
    strict = await client.get(
        "Patient", params={"shoe-size": "42"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400
    assert strict.json()["resourceType"] == "OperationOutcome"


async def test_deleted_resources_are_not_found_by_search(
    client: httpx.AsyncClient, patients: list[str]
) -> None:
    await client.delete(f"Patient/{patients[2]}")
    bundle = (await client.get("Patient", params={"family": "Windsor"})).json()
    assert bundle["total"] == 0
    assert bundle["entry"] == []


async def test_system_search_spans_types(client: httpx.AsyncClient, patients: list[str]) -> None:
    await client.post("Observation", json={"resourceType": "Observation", "status": "final",
                                           "code": {"text": "Heart rate"}})
    bundle = (await client.get("http://fhir.test/fhir", params={"_count": "10"})).json()
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 6


async def test_bad_search_value_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("Patient", params={"birthdate": "the seventies"})
    assert response.status_code == 400
    assert "seventies" not in response.text


async def test_an_ignored_parameter_is_reported_in_an_outcome_entry(
    client: httpx.AsyncClient,
) -> None:
    """Lenient handling (the default, R4 search.html#errors) ignores an unknown
    parameter; the searchset says so in an OperationOutcome entry (search.mode outcome)
    naming it, without its value, so a typo is not taken for a search that matched."""
    await client.post("Patient", json={"resourceType": "Patient", "gender": "female"})
    bundle = (await client.get("Patient", params={"patinet": "Secret-Value"})).json()
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    (outcome,) = outcomes
    (issue,) = outcome["resource"]["issue"]
    assert issue["severity"] == "warning"
    assert "'patinet'" in issue["diagnostics"]
    assert "Secret-Value" not in str(outcome)
    assert all(link["url"].find("patinet") < 0 for link in bundle["link"])
    plain = (await client.get("Patient", params={"gender": "female"})).json()
    assert all(e["search"]["mode"] == "match" for e in plain["entry"])
