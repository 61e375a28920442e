"""Generate realistic linked FHIR R4 data straight into a SQLite store file, for the
search benchmark (benchmarks/bench_search.py). Deterministic for a seed: the same
resources with the same ids (only meta.lastUpdated differs between runs).

Per patient, on average: 3 Encounters (each at one of the organizations), 10
Observations (LOINC codes with UCUM quantities, linked to patient and encounter), 1.5
Conditions (SNOMED CT), 1 DiagnosticReport (result references to that encounter's
observations); about 16 resources. Organizations: one per 200 patients, at least 5.
Names come from several scripts: English, accented Latin (José Müller), Chinese
(王芳), Greek, Cyrillic and Arabic; every resource has a generated narrative for `_text`.

Ids are predictable, so the benchmark can pick targets: Patient `pat-<n>`,
Encounter `enc-<n>-<k>`, Observation `obs-<n>-<k>`, Organization `org-<n>`, with n
zero-padded to 7 digits.

    .venv/bin/python benchmarks/generate_data.py --out /tmp/bench.db --resources 100000
    .venv/bin/python benchmarks/generate_data.py --store mongodb://127.0.0.1:27017/bench

It ends with the bytes stored per resource (SQLite: the file after VACUUM; MongoDB:
dbStats storageSize + indexSize).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stores import STORE_HELP, bytes_per_resource, open_store  # noqa: E402
from fhir_server.storage.base import Context  # noqa: E402

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
MRN = "urn:oid:2.16.840.1.113883.19.5"
XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'
RESOURCES_PER_PATIENT = 16

# code, display, UCUM unit, mean, spread
LABS = (
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 13.5, 1.8),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 105.0, 30.0),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 1.0, 0.3),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 140.0, 3.0),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 4.2, 0.4),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 7.0, 2.0),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 250.0, 60.0),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 6.0, 1.0),
    ("8867-4", "Heart rate", "/min", 75.0, 12.0),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 128.0, 15.0),
    ("29463-7", "Body weight", "kg", 75.0, 15.0),
    ("8302-2", "Body height", "cm", 170.0, 10.0),
)
CONDITIONS = (
    ("38341003", "Hypertensive disorder", "Essential hypertension, treated with diet"),
    ("44054006", "Diabetes mellitus type 2", "Type 2 diabetes mellitus, on metformin"),
    ("195967001", "Asthma", "Asthma with occasional wheeze after exercise"),
    ("13645005", "Chronic obstructive lung disease", "COPD, former smoker"),
    ("35489007", "Depressive disorder", "Depression, followed by psychiatry"),
    ("399211009", "History of myocardial infarction", "Old myocardial infarction"),
    ("73211009", "Diabetes mellitus", "Diabetes mellitus, diet controlled"),
    ("49436004", "Atrial fibrillation", "Paroxysmal atrial fibrillation on anticoagulation"),
)
ENCOUNTER_TYPES = (
    ("AMB", "ambulatory", "Outpatient visit"),
    ("EMER", "emergency", "Emergency department visit"),
    ("IMP", "inpatient encounter", "Inpatient stay"),
)
# (family names, given names), by script
NAMES = (
    (("Smith", "Johnson", "Brown", "Taylor", "Wilson", "Clarke"),
     ("James", "Mary", "Robert", "Linda", "Peter", "Susan")),
    (("Müller", "Gómez", "Dvořák", "Lefèvre", "Øster", "Łukasiewicz"),
     ("José", "François", "Zoë", "Jürgen", "Agnès", "Søren")),
    (("王", "李", "张", "刘", "陈", "杨"),
     ("芳", "伟", "娜", "秀英", "敏", "静")),
    (("Παπαδόπουλος", "Οικονόμου"), ("Μαρία", "Γιώργος")),
    (("Иванов", "Смирнова"), ("Анна", "Сергей")),
    (("الحسن", "منصور"), ("فاطمة", "محمد")),
)
SCRIPT_WEIGHTS = (40, 20, 25, 5, 5, 5)
CITIES = ("Boston", "Zürich", "北京", "São Paulo", "Montréal", "Athina")


def _div(text: str) -> dict[str, str]:
    return {"status": "generated", "div": f"<div {XHTML}>{text}</div>"}


def _name(rng: random.Random) -> tuple[str, str, int]:
    script = rng.choices(range(len(NAMES)), SCRIPT_WEIGHTS)[0]
    families, givens = NAMES[script]
    return rng.choice(families), rng.choice(givens), script


def organization(n: int) -> dict[str, Any]:
    name = f"{CITIES[n % len(CITIES)]} General Hospital {n}"
    return {
        "resourceType": "Organization",
        "id": f"org-{n:07d}",
        "text": _div(f"{name}, acute care hospital"),
        "active": True,
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.7", "value": f"ORG{n:05d}"}],
        "name": name,
        "address": [{"city": CITIES[n % len(CITIES)]}],
    }


def patient_record(n: int, organizations: int, rng: random.Random) -> list[dict[str, Any]]:
    """One patient and everything linked to it."""
    pid = f"pat-{n:07d}"
    family, given, script = _name(rng)
    birth = date(1930, 1, 1) + timedelta(days=rng.randrange(0, 365 * 85))
    gender = rng.choice(("male", "female"))
    org = f"org-{rng.randrange(organizations):07d}"
    display = f"{family}{given}" if script == 2 else f"{given} {family}"
    out: list[dict[str, Any]] = [{
        "resourceType": "Patient",
        "id": pid,
        "text": _div(f"{display}, {gender}, born {birth.isoformat()}"),
        "identifier": [{"system": MRN, "value": f"MRN{n:07d}"}],
        "name": [{"family": family, "given": [given], "text": display}],
        "gender": gender,
        "birthDate": birth.isoformat(),
        "address": [{"city": rng.choice(CITIES), "postalCode": f"{rng.randrange(10000, 99999)}"}],
        "managingOrganization": {"reference": f"Organization/{org}"},
    }]  # fmt: skip
    subject = {"reference": f"Patient/{pid}"}
    obs_n = 0
    for k in range(rng.choice((2, 3, 3, 4))):
        eid = f"enc-{n:07d}-{k}"
        start = date(2015, 1, 1) + timedelta(days=rng.randrange(0, 365 * 10))
        cls, cls_display, kind = rng.choice(ENCOUNTER_TYPES)
        # mostly the patient's own organization
        provider = org if rng.random() < 0.8 else f"org-{rng.randrange(organizations):07d}"
        out.append({
            "resourceType": "Encounter",
            "id": eid,
            "text": _div(f"{kind} of {display} on {start.isoformat()}"),
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": cls, "display": cls_display},
            "subject": subject,
            "serviceProvider": {"reference": f"Organization/{provider}"},
            "period": {"start": f"{start.isoformat()}T{rng.randrange(7, 19):02d}:00:00Z",
                       "end": f"{start.isoformat()}T{rng.randrange(19, 23):02d}:30:00Z"},
        })  # fmt: skip
        results = []
        for _ in range(rng.choice((2, 3, 3, 4))):
            code, lab, unit, mean, spread = rng.choice(LABS)
            value = round(max(rng.gauss(mean, spread), 0.1), 1)
            oid = f"obs-{n:07d}-{obs_n}"
            obs_n += 1
            results.append({"reference": f"Observation/{oid}"})
            out.append({
                "resourceType": "Observation",
                "id": oid,
                "text": _div(f"{lab}: {value} {unit}"),
                "status": "final",
                "category": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory" if unit not in ("/min", "mm[Hg]", "kg", "cm")
                    else "vital-signs"}]}],
                "code": {"coding": [{"system": LOINC, "code": code, "display": lab}]},
                "subject": subject,
                "encounter": {"reference": f"Encounter/{eid}"},
                "effectiveDateTime": f"{start.isoformat()}T{rng.randrange(8, 18):02d}:"
                                     f"{rng.randrange(60):02d}:00Z",
                "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
            })  # fmt: skip
        if k == 0 or rng.random() < 0.2:
            out.append({
                "resourceType": "DiagnosticReport",
                "id": f"rep-{n:07d}-{k}",
                "text": _div(f"Laboratory report for {display}, {len(results)} results"),
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "11502-2",
                                     "display": "Laboratory report"}]},
                "subject": subject,
                "encounter": {"reference": f"Encounter/{eid}"},
                "effectiveDateTime": f"{start.isoformat()}T18:00:00Z",
                "issued": f"{start.isoformat()}T18:30:00Z",
                "result": results,
            })  # fmt: skip
    for c in range(rng.choice((0, 1, 1, 2, 2, 3))):
        code, cdisplay, note = rng.choice(CONDITIONS)
        onset = birth + timedelta(days=rng.randrange(365 * 20, 365 * 80))
        out.append({
            "resourceType": "Condition",
            "id": f"con-{n:07d}-{c}",
            "text": _div(f"{note} ({display})"),
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "code": {"coding": [{"system": SNOMED, "code": code, "display": cdisplay}]},
            "subject": subject,
            "onsetDateTime": onset.isoformat(),
        })  # fmt: skip
    return out


async def generate(
    out: Path, resources: int, seed: int, batch: int, store_url: str | None = None
) -> tuple[int, float, str]:
    """Write about `resources` resources into a new store at `out` (or the MongoDB
    database of `store_url`); (count, seconds, bytes stored per resource)."""
    if store_url is None and out.exists():
        raise SystemExit(f"{out} exists; give a new file")
    rng = random.Random(seed)
    patients = max(resources // RESOURCES_PER_PATIENT, 1)
    organizations = max(patients // 200, 5)
    store = await open_store(store_url, out)
    ctx = Context()
    written = 0
    closed = False
    began = time.perf_counter()
    try:
        pending: list[dict[str, Any]] = [organization(n) for n in range(organizations)]
        for n in range(patients + 1):
            if n < patients:
                pending.extend(patient_record(n, organizations, rng))
            if len(pending) >= batch or (n == patients and pending):
                async with store.transaction(ctx) as txn:
                    for resource in pending:
                        await txn.create(resource, resource["id"])
                written += len(pending)
                pending = []
                if written % 20_000 < batch:
                    if store_url is None:
                        # Copy the WAL back and empty it: the store's own PASSIVE
                        # checkpoints never catch up with a writer that never pauses, and
                        # the WAL grew past 30 GB (and writes slowed 3x) on the way to 1M.
                        store._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # noqa: SLF001
                    rate = written / (time.perf_counter() - began)
                    print(f"{written:>9} resources, {rate:,.0f}/s", file=sys.stderr)
        seconds = time.perf_counter() - began
        size = await bytes_per_resource(store, None if store_url else out, written)
        closed = store_url is None  # measuring SQLite closes the store to VACUUM the file
    finally:
        if not closed:
            await store.close()
    return written, seconds, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="new SQLite store file")
    parser.add_argument("--store", metavar="URL", help=STORE_HELP)
    parser.add_argument("--resources", type=int, default=100_000, help="about this many")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch", type=int, default=500, help="resources per transaction")
    args = parser.parse_args()
    if args.out is None and args.store is None:
        parser.error("give --out FILE (SQLite) or --store mongodb://...")
    count, seconds, size = asyncio.run(
        generate(args.out or Path("unused"), args.resources, args.seed, args.batch, args.store)
    )
    print(f"{count} resources in {seconds:.1f} s ({count / seconds:,.0f}/s); {size}")


if __name__ == "__main__":
    main()
