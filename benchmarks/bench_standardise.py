"""Cost of standardisation (terminology/standardise.py) on the HL7v2 path.

    .venv/bin/python benchmarks/bench_standardise.py [--messages 2000] [--codes 2000]

Translates the same ORU^R01 messages (google_oru_r01_ex6.hl7 with 5 OBX, its control id
varied) with no source map installed and with a source ConceptMap of `--codes` local
codes (the sample's five among them) plus a unit map, and reports messages/s for both
and the time standardise_observation takes per Observation. Translation only: no store.
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal
from pathlib import Path

from adapters.hl7v2.translate import translate_bytes
from search.units import canonical_unit
from terminology.standardise import (
    CONTEXT_CODE,
    CONTEXT_TYPE,
    SOURCE_SYSTEM,
    SourceMaps,
    install,
    standardise_observation,
)

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "samples" / "hl7v2"
WINPATH = "urn:fhir-fusion:hl7v2:codesystem:WinPath"
REAL = {"tt-0003-01": "14682-9", "tt-0003-02": "2823-3", "tt-0003-03": "2951-2",
        "tt-0003-04": "22664-7", "tt-0003-05": "33914-3"}


def concept_map(codes: int) -> dict[str, object]:
    elements = [{"code": code, "target": [{"code": loinc, "equivalence": "equivalent"}]}
                for code, loinc in REAL.items()]
    elements += [{"code": f"LOCAL-{n}", "target": [{"code": "2345-7",
                                                   "equivalence": "equivalent"}]}
                 for n in range(max(codes - len(REAL), 0))]
    return {"resourceType": "ConceptMap", "url": "urn:bench:sfac",
            "useContext": [{"code": {"system": CONTEXT_TYPE, "code": CONTEXT_CODE},
                            "valueCodeableConcept": {"coding": [{"system": SOURCE_SYSTEM,
                                                                 "code": "SFAC"}]}}],
            "group": [{"source": WINPATH, "target": "http://loinc.org", "element": elements},
                      {"target": "http://unitsofmeasure.org", "element": [
                          {"code": u, "target": [{"code": c, "equivalence": "equal"}]}
                          for u, c in (("MMOLL", "mmol/L"), ("UMOLL", "umol/L"),
                                       ("MLMIN", "mL/min"))]}]}


def messages(count: int) -> list[bytes]:
    raw = (SAMPLE / "google_oru_r01_ex6.hl7").read_bytes()
    return [raw.replace(b"|ORU^R01|7|", f"|ORU^R01|B{n}|".encode(), 1) for n in range(count)]


def rate(batch: list[bytes]) -> float:
    started = time.perf_counter()
    for raw in batch:
        translate_bytes(raw)
    return len(batch) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--codes", type=int, default=2000)
    args = parser.parse_args()
    batch = messages(args.messages)
    canonical_unit("mg/dL")  # the UCUM registry loads once (1-5 s), not timed

    install(SourceMaps())
    without = rate(batch)
    started = time.perf_counter()
    maps = SourceMaps([(None, concept_map(args.codes))])
    compiled = time.perf_counter() - started
    install(maps)
    with_map = rate(batch)

    obs = {"resourceType": "Observation",
           "code": {"coding": [{"system": WINPATH, "code": "tt-0003-01"}]},
           "valueQuantity": {"value": Decimal("86.25"), "unit": "UMOLL"}}
    rounds = 20000
    started = time.perf_counter()
    for _ in range(rounds):
        standardise_observation({**obs, "code": {"coding": list(obs["code"]["coding"])},
                                 "valueQuantity": dict(obs["valueQuantity"])},
                                ("SFAC/SIMHOSP", "SFAC", "SIMHOSP"), maps=maps)
    per_obs = (time.perf_counter() - started) / rounds * 1e6
    install(SourceMaps())
    print(f"ConceptMap of {args.codes} codes compiled in {compiled * 1000:.1f} ms")
    print(f"HL7v2 ORU^R01 (5 OBX) translation: {without:,.0f} msg/s with no source map, "
          f"{with_map:,.0f} msg/s with the source map")
    print(f"standardise_observation (code mapped, unit mapped, canonical quantity): "
          f"{per_obs:.1f} us per Observation")


if __name__ == "__main__":
    main()
