"""$expand `exclude-system` (R4 valueset-operation-expand.html: "Code system, or a
particular version of a code system to be excluded from the value set expansion. The
format is the same as a canonical URL: [system]|[version]"), break-new finding 16: the
codes are left out before paging (total and pages agree), the |version form is honoured
and the parameter is echoed in expansion.parameter. Over HTTP, on SQLite and MongoDB."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from terminology_backends import store  # noqa: F401 - SQLite and MongoDB (mongomock)

pytestmark = pytest.mark.anyio

GENDER = "http://hl7.org/fhir/administrative-gender"  # shipped, version 4.0.1, 4 codes
LAB = "http://hospital-a.example/fhir/CodeSystem/lab"
MIX = "http://ex.org/vs/mix"

LAB_SYSTEM = {
    "resourceType": "CodeSystem", "url": LAB, "name": "HospitalALab", "status": "active",
    "content": "complete",
    "concept": [{"code": "NEW1", "display": "New test one"},
                {"code": "A1", "display": "Analyte one"}],
}  # fmt: skip
MIX_VS = {
    "resourceType": "ValueSet", "url": MIX, "status": "active",
    "compose": {"include": [{"system": GENDER}, {"system": LAB}]},
}  # fmt: skip


async def _expand(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await client.get("ValueSet/$expand", params=params)
    assert r.status_code == 200, r.text
    expansion: dict[str, Any] = r.json()["expansion"]
    return expansion


def _codes(expansion: dict[str, Any]) -> list[str]:
    return [c["code"] for c in expansion.get("contains", [])]


async def test_exclude_system_applies_before_paging(client: httpx.AsyncClient) -> None:
    for resource in (LAB_SYSTEM, MIX_VS):
        r = await client.post(resource["resourceType"], json=resource)
        assert r.status_code == 201, r.text
    whole = await _expand(client, url=MIX)
    assert whole["total"] == 6
    assert _codes(whole) == ["male", "female", "other", "unknown", "NEW1", "A1"]

    page = await _expand(client, url=MIX, count=3, **{"exclude-system": GENDER})
    assert page["total"] == 2
    assert _codes(page) == ["NEW1", "A1"]
    assert {"name": "exclude-system", "valueCanonical": GENDER} in page["parameter"]
    second = await _expand(client, url=MIX, count=1, offset=1, **{"exclude-system": GENDER})
    assert (second["total"], _codes(second)) == (2, ["A1"])

    # the version form: the shipped AdministrativeGender is 4.0.1
    versioned = await _expand(client, url=MIX, count=3, **{"exclude-system": f"{GENDER}|4.0.1"})
    assert (versioned["total"], _codes(versioned)) == (2, ["NEW1", "A1"])
    assert {"name": "exclude-system", "valueCanonical": f"{GENDER}|4.0.1"} in versioned[
        "parameter"]
    other = await _expand(client, url=MIX, count=3, **{"exclude-system": f"{GENDER}|3.0.2"})
    assert (other["total"], _codes(other)) == (6, ["male", "female", "other"])

    # the lab codes out: the gender codes remain, type-ahead still works over them
    lab_out = await _expand(client, url=MIX, filter="fem", **{"exclude-system": LAB})
    assert (lab_out["total"], _codes(lab_out)) == (1, ["female"])


async def test_exclude_system_of_the_only_system(client: httpx.AsyncClient) -> None:
    expansion = await _expand(client, url="http://loinc.org/vs", count=5,
                              **{"exclude-system": "http://loinc.org"})  # fmt: skip
    assert expansion["total"] == 0 and "contains" not in expansion
    kept = await _expand(client, url="http://loinc.org/vs", count=5,
                         **{"exclude-system": GENDER})  # fmt: skip
    assert kept["total"] == 189 and len(_codes(kept)) == 5
