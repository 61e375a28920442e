"""Values that once crashed a translator (break-feeds F2, F22): a number with thousands of
digits is kept as sent, not an internal error."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from adapters.csv.ingest import ingest_csv
from adapters.hl7v2.mllp import start_mllp_server
from adapters.pipeline import Pipeline
from fhir_server.storage.sqlite import SQLiteStore
from terminology.standardise_units import canonical_quantity
from tests.test_feeds_limits import CTX, send

LONG = "9" * 2000


def test_a_value_with_too_many_digits_to_convert_keeps_its_own_unit() -> None:
    assert canonical_quantity(Decimal(LONG), "g/dL") is None
    assert canonical_quantity(Decimal("1E+999999999"), "mg/dL") is None
    assert canonical_quantity(Decimal("1E+999999"), "mg/dL") == (Decimal("1E+999997"), "g/L")
    assert canonical_quantity(Decimal("100"), "mg/dL") == (Decimal("1.00"), "g/L")
    assert canonical_quantity(Decimal("1E+5"), "mg/dL") == (Decimal("1000"), "g/L")


def test_an_obx_with_a_2000_digit_value_is_stored_as_sent(tmp_path: Path) -> None:
    message = (b"MSH|^~\\&|SAPP|SFAC|RAPP|RFAC|20240101120000||ORU^R01|L15|P|2.5.1\r"
               b"PID|1||MRN123^^^HOSP^MR||Name^Zelda||19750314|F\r"
               b"OBR|1||O1|718-7^Hgb^LN\r"
               b"OBX|1|NM|718-7^Hgb^LN||" + LONG.encode() + b"|g/dL|||||F\r")

    async def main() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        server = await start_mllp_server(Pipeline(store), CTX, "127.0.0.1", 0)
        try:
            code, control, _ = await send(server.sockets[0].getsockname()[1], message)
            assert (code, control) == ("AA", "L15")
            assert len(await store.list_inputs(CTX, status="stored")) == 1
        finally:
            server.close()
            await server.wait_closed()
            await store.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_csv_row_with_a_400_digit_value_does_not_stop_the_file(tmp_path: Path) -> None:
    patients = b"Id,BIRTHDATE,FIRST,LAST,GENDER\np1,1980-01-01,Ann,Doe,F\n"
    labs = ("DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE\n"
            f"2020-02-06,p1,e1,laboratory,2345-7,Glucose,{'9' * 400},mg/dL,numeric\n"
            "2020-02-07,p1,e1,laboratory,2345-7,Glucose,100,mg/dL,numeric\n").encode()

    async def main() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        try:
            pipeline = Pipeline(store)
            assert (await ingest_csv(pipeline, CTX, patients, "patients")).count("stored") == 1
            summary = await ingest_csv(pipeline, CTX, labs, "lab-results")
            # the absurd value rejects its own row (line 2), the next row is stored
            assert [row.status for row in summary.rows] == ["rejected", "stored"]
            assert "line 2: column VALUE has more than 18 digits" in str(summary)
        finally:
            await store.close()

    asyncio.run(main())
