"""UCUM as a code system: validity, canonical forms and conversion. The cases are written
here from the UCUM specification's definitions (unitsofmeasure.org/ucum: the grammar of
section 2, the base and derived unit tables, case-sensitive codes), in the manner of its
functional tests: valid and invalid expressions, and conversions whose results follow
exactly from the unit definitions."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from terminology import ucum
from terminology.store import TerminologyError

VALID = [
    "m", "s", "g", "rad", "K", "cd", "mol", "10*3", "10^3", "10*", "%", "[ppm]", "kg.m/s2",
    "m2", "m-1", "/s", "/min", "1", "mg/dL", "mmol/L", "umol/L", "mm[Hg]", "[in_i]",
    "[ft_i]", "[lb_av]", "Cel", "[degF]", "10*6/uL", "{rbc}/uL", "{score}", "[IU]/L",
    "mL/min/{1.73_m2}", "kg/(m.s2)", "mo", "a", "wk", "h", "d", "ug", "ng/mL", "fL",
    "U/L", "meq/L", "mosm/kg", "[drp]", "L", "l", "dm3", "4.[pi].10*-7.N/A2", "[pH]",
    "B[V]", "Np", "[arb'U]", "[CFU]", "kat", "%[slope]", "10.L/(min.m2)",
]  # fmt: skip
INVALID = [
    "mg/",  # a division needs a right operand
    "kg.",  # so does a multiplication
    "m//s",
    "mg/DL",  # codes are case-sensitive: "DL" is nothing
    "Kg",  # neither is "Kg" (kilo is "k")
    "[in]",  # inch is [in_i] (international) or [in_us]
    "kg m",  # no spaces in an expression
    "{abc",  # an annotation must close
    "sec", "hr", "mcg", "cc", "gm",  # common non-UCUM abbreviations
    "",
]  # fmt: skip
CONVERSIONS = [
    ("1", "[in_i]", "cm", "2.54"),  # [in_i] = 2.54 cm exactly
    ("1", "[ft_i]", "[in_i]", "12"),
    ("1", "[mi_i]", "m", "1609.344"),  # 5280 [ft_i]
    ("1", "[lb_av]", "g", "453.59237"),
    ("100", "mg/dL", "g/L", "1"),
    ("0", "Cel", "K", "273.15"),
    ("98.6", "[degF]", "Cel", "37"),
    ("1", "h", "min", "60"),
    ("1", "L", "dm3", "1"),
    ("1", "10*3/uL", "10*9/L", "1"),
    ("5.5", "mmol/L", "umol/mL", "5.5"),
    ("120", "mm[Hg]", "kPa", "15.99868649"),  # 1 mm[Hg] = 133.322 Pa (UCUM: 13.5951 g/cm3 * g)
]


@pytest.mark.parametrize("code", VALID)
def test_valid_units(code: str) -> None:
    assert ucum.problem(code) is None


@pytest.mark.parametrize("code", INVALID)
def test_invalid_units(code: str) -> None:
    why = ucum.problem(code)
    assert why is not None and "not a valid UCUM unit" in why


@pytest.mark.parametrize(("value", "unit", "target", "expected"), CONVERSIONS)
def test_conversions(value: str, unit: str, target: str, expected: str) -> None:
    assert ucum.convert(Decimal(value), unit, target) == Decimal(expected)


def test_canonical_forms_compare_like_with_like() -> None:
    mass = ucum.canonical("mg/dL")
    assert mass is not None and mass == ("kilogram.meter-3", Decimal("0.01"), Decimal(0))
    assert ucum.canonical("g/L") == ("kilogram.meter-3", Decimal(1), Decimal(0))
    molar = ucum.canonical("mmol/L")
    assert molar is not None and molar[0] != mass[0]  # molar stays molar


def test_incommensurable_and_bad_units_are_errors() -> None:
    with pytest.raises(TerminologyError) as caught:
        ucum.convert(Decimal(1), "mg/dL", "mmol/L")  # needs a molar mass
    assert caught.value.status == 400 and "commensurable" in str(caught.value)
    with pytest.raises(TerminologyError) as caught:
        ucum.convert(Decimal(1), "mcg", "g")
    assert caught.value.issues[0].expression == ("from",)


@pytest.mark.anyio
async def test_validate_code_over_http(client: httpx.AsyncClient) -> None:
    r = await client.get("CodeSystem/$validate-code",
                         params={"url": "http://unitsofmeasure.org", "code": "mm[Hg]"})
    body = r.json()
    assert r.status_code == 200
    assert body["parameter"][0] == {"name": "result", "valueBoolean": True}
    r = await client.get("CodeSystem/$validate-code",
                         params={"url": "http://unitsofmeasure.org", "code": "mmHg"})
    params = {p["name"]: p for p in r.json()["parameter"]}
    assert r.status_code == 200
    assert params["result"]["valueBoolean"] is False
    assert "mmHg" in params["message"]["valueString"]
    r = await client.get("CodeSystem/$lookup",
                         params={"system": "http://unitsofmeasure.org", "code": "mg/dL"})
    assert r.status_code == 200
    r = await client.get("CodeSystem/$lookup",
                         params={"system": "http://unitsofmeasure.org", "code": "mg/"})
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
