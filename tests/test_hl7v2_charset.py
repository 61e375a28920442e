"""MSH-18 character sets (HL7 table 0211) and the HTTP charset parameter (break-feeds
F18): over MLLP and HTTP on real sockets, into a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import live_server

from adapters.hl7v2.charset import decode_message, msh18
from adapters.hl7v2.errors import Hl7Error
from adapters.ingest import ingest_files
from adapters.pipeline import Pipeline
from fhir_server.storage.base import Context
from fhir_server.storage.sqlite import SQLiteStore
from search.query import parse_search
from tests.test_hl7v2_identity import run, send

CTX = Context()
HL7 = "x-application/hl7-v2+er7"


def adt(control: str, charset: str, family: str, codec: str) -> bytes:
    head = f"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|{control}|P|2.5||||||{charset}\r"
    rest = f"EVN|A01|20240101\rPID|1||{control}^^^H^MR||{family}^Ann||19800101|F\rPV1|1|I\r"
    return head.encode("ascii") + rest.encode(codec)


async def family(store: SQLiteStore, mrn: str) -> Any:
    page = await store.search(CTX, parse_search("Patient", [("identifier", mrn)]))
    found = [r.resource for r in page.resources if r.resource]
    return found[0]["name"][0]["family"] if found else None


def test_msh18_names_the_character_set_over_mllp(tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        acks = await send(port, adt("CS1", "GB 18030-2000", "王芳", "gb18030"),
                          adt("CS2", "8859/5", "Иванов", "iso8859-5"),
                          adt("CS3", "KS X 1001", "김민준", "euc_kr"),
                          adt("CS4", "8859/1", "Ñúñez", "latin-1"),
                          adt("CS5", "UNICODE UTF-8", "Müller", "utf-8"))
        assert [a.code for a in acks] == ["AA"] * 5
        assert [await family(store, f"CS{i}") for i in range(1, 6)] == [
            "王芳", "Иванов", "김민준", "Ñúñez", "Müller"]

    run(tmp_path / "db.sqlite3", scenario)


def test_a_wrong_or_unknown_msh18_is_refused_naming_it(tmp_path: Path) -> None:
    async def scenario(store: SQLiteStore, port: int) -> None:
        acks = await send(port, adt("BAD1", "UNICODE UTF-8", "王芳", "gb18030"),
                          adt("BAD2", "KLINGON", "Ann", "ascii"),
                          adt("BAD3", "UNICODE UTF-16", "Ann", "ascii"),
                          adt("BAD4", "ASCII", "Ñúñez", "latin-1"))
        assert [(a.code, a.control_id, a.err_where) for a in acks] == [
            ("AE", f"BAD{i}", "MSH-18") for i in range(1, 5)]
        assert [a.err_code for a in acks] == ["102", "103", "103", "102"]
        assert [await family(store, f"BAD{i}") for i in range(1, 5)] == [None] * 4
        kept = await store.list_inputs(CTX, status="rejected")
        assert len(kept) == 4 and all("MSH-18" in (k.reason or "") for k in kept)

    run(tmp_path / "db.sqlite3", scenario)


def test_msh18_is_read_from_bytes_with_repetitions_and_spacing() -> None:
    raw = adt("X", "gb  18030-2000~ISO IR87", "王", "gb18030")
    assert msh18(raw) == "GB 18030-2000"
    assert "王" in decode_message(raw)
    assert msh18(b"\xef\xbb\xbf" + raw) == "GB 18030-2000"
    assert msh18(b"MSH|^~\\&|A|B\rPID|1") == ""
    with pytest.raises(Hl7Error, match="UTF-16 cannot be framed by MLLP"):
        decode_message(adt("X", "UNICODE UTF-16", "A", "ascii"))


def test_a_file_keeps_each_message_in_its_own_character_set(tmp_path: Path) -> None:
    path = tmp_path / "mixed.hl7"
    path.write_bytes(adt("F1", "GB 18030-2000", "王芳", "gb18030")
                     + adt("F2", "8859/5", "Иванов", "iso8859-5"))

    async def scenario() -> None:
        store = await SQLiteStore.open(tmp_path / "db.sqlite3")
        try:
            summary = await ingest_files(Pipeline(store), CTX, [path])
            assert (summary.messages, summary.stored) == (2, 2)
            assert [await family(store, "F1"), await family(store, "F2")] == ["王芳", "Иванов"]
        finally:
            await store.close()

    asyncio.run(scenario())


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, SQLiteStore]]:
    async with live_server(tmp_path) as (url, store):
        async with httpx.AsyncClient(base_url=f"{url}/fhir/", timeout=60) as http:
            yield http, store


@pytest.mark.anyio
async def test_the_http_charset_takes_precedence_over_msh18(
        client: tuple[httpx.AsyncClient, SQLiteStore]) -> None:
    http, store = client
    # no MSH-18; the Content-Type says GB18030
    ok = await http.post("$ingest", content=adt("H1", "", "王芳", "gb18030"),
                         headers={"Content-Type": f"{HL7}; charset=GB18030"})
    assert ok.status_code == 200, ok.text
    # MSH-18 says Latin-1, the transport knows better
    ok = await http.post("$ingest", content=adt("H2", "8859/1", "Иванов", "iso8859-5"),
                         headers={"Content-Type": f"{HL7}; charset=iso-8859-5"})
    assert ok.status_code == 200, ok.text
    assert [await family(store, "H1"), await family(store, "H2")] == ["王芳", "Иванов"]
    # kept as UTF-8, MSH-18 saying so: a retry decodes it the same way
    (kept,) = [k for k in await store.list_inputs(CTX, status="stored") if b"H2^^^" in k.content]
    assert "Иванов".encode() in kept.content and b"|UNICODE UTF-8" in kept.content
    bad = await http.post("$ingest", content=adt("H3", "", "王芳", "gb18030"),
                          headers={"Content-Type": f"{HL7}; charset=utf-8"})
    assert bad.status_code == 400
    assert "MSH-18" in bad.json()["issue"][0]["diagnostics"]
    assert "kept as input" in bad.json()["issue"][0]["diagnostics"]
    unknown = await http.post("$ingest", content=adt("H4", "", "Ann", "ascii"),
                              headers={"Content-Type": f"{HL7}; charset=x-klingon"})
    assert unknown.status_code == 400
