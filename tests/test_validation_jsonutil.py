"""jsonutil: integers beyond 64 bits keep their digits (orjson cannot write them as
ints) and a JSON object with a repeated key is rejected, not resolved last-wins."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from fhir_server import jsonutil

JSON = {"Content-Type": "application/fhir+json"}


def test_big_integers_round_trip_with_their_digits() -> None:
    text = '{"a":12345678901234567890123,"b":-9223372036854775809,"c":42,"d":1.50}'
    value = jsonutil.loads(text)
    assert value["a"] == Decimal("12345678901234567890123")
    assert value["c"] == 42 and type(value["c"]) is int
    assert jsonutil.dumps(value) == text.encode()


def test_duplicate_keys_are_a_value_error() -> None:
    with pytest.raises(jsonutil.DuplicateKeyError):
        jsonutil.loads('{"resourceType":"Patient","active":true,"active":false}')
    with pytest.raises(ValueError):
        jsonutil.loads('{"a":{"b":1,"b":1}}')



@pytest.mark.anyio
async def test_rest_stores_a_big_decimal_with_its_digits(client: httpx.AsyncClient) -> None:
    body = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"g"},'
        b'"valueQuantity":{"value":12345678901234567890123}}'
    )
    created = await client.post("Observation", content=body, headers=JSON)
    assert created.status_code == 201
    read = await client.get(f"Observation/{created.json()['id']}")
    assert b'"value":12345678901234567890123' in read.content.replace(b" ", b"")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    # RFC 8259 section 6: "Numeric values that cannot be represented ... (such as
    # Infinity and NaN) are not permitted."
    with pytest.raises(ValueError):
        jsonutil.loads(f'{{"value":{constant}}}')


@pytest.mark.anyio
async def test_rest_duplicate_keys_are_400(client: httpx.AsyncClient) -> None:
    dup = await client.post(
        "Patient", content=b'{"resourceType":"Patient","active":true,"active":false}',
        headers=JSON,
    )
    assert dup.status_code == 400
    assert dup.json()["issue"][0]["code"] == "structure"
