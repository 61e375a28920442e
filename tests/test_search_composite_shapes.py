"""The composites beyond token$value: MolecularSequence's coordinates
(token$number$number) and DocumentReference relationship (reference$token), on a bare
SQLite index, plus the check that every R4 composite is now searchable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance.definitions import RESOURCE_TYPES, search_parameters
from fhir_server.errors import FHIRError
from search.composites import DATA, components
from tests.search_index_db import SearchDB

CHROMOSOME = "http://terminology.hl7.org/CodeSystem/chromosome-human"
NUCCORE = "http://www.ncbi.nlm.nih.gov/nuccore"


def _sequence(seq_id: str, chromosome: str, refseq: str, window: tuple[int, int],
              variants: list[tuple[int, int]]) -> dict[str, Any]:  # fmt: skip
    return {
        "resourceType": "MolecularSequence",
        "id": seq_id,
        "type": "dna",
        "coordinateSystem": 1,
        "referenceSeq": {
            "chromosome": {"coding": [{"system": CHROMOSOME, "code": chromosome}]},
            "referenceSeqId": {"coding": [{"system": NUCCORE, "code": refseq}]},
            "windowStart": window[0],
            "windowEnd": window[1],
        },
        "variant": [{"start": start, "end": end} for start, end in variants],
    }


@pytest.fixture
def db(tmp_path: Path) -> SearchDB:
    index = SearchDB(tmp_path / "index.db")
    # chromosome 1, NC_000001.11, window 124-344 with a variant at 200-201
    index.add(_sequence("s1", "1", "NC_000001.11", (124, 344), [(200, 201)]))
    # chromosome 1, window 400-500, variants 410-411 and 480-481
    index.add(_sequence("s2", "1", "NC_000001.11", (400, 500), [(410, 411), (480, 481)]))
    # chromosome 2 with the same window as s1
    index.add(_sequence("s3", "2", "NC_000002.12", (124, 344), [(300, 301)]))
    index.add({
        "resourceType": "DocumentReference", "id": "d2", "status": "current",
        "content": [{"attachment": {"url": "http://example.org/d2.pdf"}}],
        "relatesTo": [{"code": "replaces", "target": {"reference": "DocumentReference/d1"}},
                      {"code": "appends", "target": {"reference": "DocumentReference/d0"}}],
    })  # fmt: skip
    index.add({
        "resourceType": "DocumentReference", "id": "d3", "status": "current",
        "content": [{"attachment": {"url": "http://example.org/d3.pdf"}}],
        "relatesTo": [{"code": "transforms", "target": {"reference": "DocumentReference/d1"}}],
    })  # fmt: skip
    return index


@pytest.mark.parametrize(
    ("code", "value", "expected"),
    [
        # the R4 registry's example: a window on chromosome 1 with position > 123, < 345
        ("chromosome-window-coordinate", "1$lt345$gt123", {"s1"}),
        ("chromosome-window-coordinate", "1$lt401$gt123", {"s1", "s2"}),
        ("chromosome-window-coordinate", "1$lt345$ge345", set()),
        ("chromosome-window-coordinate", f"{CHROMOSOME}|1$lt345$gt123", {"s1"}),
        ("chromosome-window-coordinate", "2$lt345$gt123", {"s3"}),
        ("chromosome-window-coordinate", "1$124$344", {"s1"}),
        ("chromosome-window-coordinate", "1$124$344,2$124$344", {"s1", "s3"}),
        ("referenceseqid-window-coordinate", "NC_000001.11$ge400$le500", {"s2"}),
        # variants: the chromosome comes from the resource, start and end from each variant
        ("chromosome-variant-coordinate", "1$ge400$le411", {"s2"}),
        ("chromosome-variant-coordinate", "1$ge300$le301", set()),  # 300 is on chromosome 2
        ("chromosome-variant-coordinate", "2$ge300$le301", {"s3"}),
        # one variant must satisfy both: 410-411 starts before 450, 480-481 ends after
        ("referenceseqid-variant-coordinate", f"{NUCCORE}|NC_000001.11$gt450$lt420", set()),
        ("referenceseqid-variant-coordinate", "NC_000001.11$gt450$lt490", {"s2"}),
        ("relationship", "DocumentReference/d1$replaces", {"d2"}),
        ("relationship", "d1$transforms", {"d3"}),
        ("relationship", "DocumentReference/d1$appends", set()),  # d2 appends to d0
        ("relationship", "DocumentReference/d0$appends", {"d2"}),
    ],
)
def test_composite_search(db: SearchDB, code: str, value: str, expected: set[str]) -> None:
    resource_type = "DocumentReference" if code == "relationship" else "MolecularSequence"
    assert db.found(resource_type, f"{code}={value.replace('|', '%7C')}") == expected


def test_missing_on_a_coordinate_composite(db: SearchDB) -> None:
    db.add({"resourceType": "MolecularSequence", "id": "bare", "coordinateSystem": 0})
    assert db.found("MolecularSequence", "chromosome-window-coordinate:missing=true") == {"bare"}


@pytest.mark.parametrize(
    "value", ["1$lt345", "1$lt345$gt123$9", "1$abc$gt123", "1$lt345$zz1"]
)
def test_bad_coordinate_values_are_400(db: SearchDB, value: str) -> None:
    with pytest.raises(FHIRError) as caught:
        db.search("MolecularSequence", [("chromosome-window-coordinate", value)])
    assert caught.value.status == 400


def test_every_r4_composite_is_supported() -> None:
    urls = set(json.loads(DATA.read_text("utf-8"))["composites"])
    assert len(urls) == 46
    supported = {
        param.url
        for rtype in RESOURCE_TYPES
        for code, param in search_parameters(rtype).items()
        if param.type == "composite" and components(rtype, code) is not None
    }
    assert supported == urls
