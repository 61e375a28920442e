"""A synthetic HL7v2 feed for demonstrations, tests and benchmarks.

Everything here is generated: the patients are made up (some names accented, some
Chinese), the MRNs belong to a demo assigning authority, and the lab values are drawn
from a seeded random generator, so a given (count, seed) always gives the same bytes.

Each patient contributes, in order, an admission (ADT^A01 for even, ADT^A04 for odd
patient numbers), a basic metabolic panel (ORU^R01: glucose, sodium, potassium,
creatinine), a demographics update (ADT^A08) and a blood count (ORU^R01: hemoglobin).
Messages are HL7 v2.5.1 in UTF-8 (MSH-18 "UNICODE UTF-8") with CR segment separators,
in original acknowledgment mode (MSH-15/16 empty), so a receiver answers AA/AE/AR.

`send_messages` is a small MLLP client (HL7 v2 Implementation Guide, Minimal Lower
Layer Protocol: <VT> message <FS><CR>) used to push the feed through a real socket.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFAULT_SEED = 2026
ASSIGNING_AUTHORITY = "FUSIONDEMO"
# 2.16.840.1.113883.19 is the OID arc HL7 reserves for examples.
ASSIGNING_AUTHORITY_OID = "2.16.840.1.113883.19.5"
SENDING_APPLICATION = "FUSIONDEMO"
SENDING_FACILITY = "DEMOHOSP"
HL7_VERSION = "2.5.1"

_START = datetime(2026, 11, 2, 7, 30, tzinfo=UTC)

# (family, given, administrative sex). Invented combinations; none is a real person.
_NAMES: tuple[tuple[str, str, str], ...] = (
    ("Fairbanks", "Theo", "M"),
    ("Müller", "Zoë", "F"),
    ("Núñez", "José", "M"),
    ("陈", "小梅", "F"),
    ("Okonkwo-Lindgren", "Amara", "F"),
    ("Dubois", "Hélène", "F"),
    ("Søndergaard", "Mikkel", "M"),
    ("王", "建华", "M"),
    ("Haddad", "Yasmin", "F"),
    ("Novák", "Tomáš", "M"),
    ("Ó Briain", "Aoife", "F"),
    ("刘", "志强", "M"),
    ("Castellanos", "Inés", "F"),
    ("Whitcombe", "Rufus", "M"),
    ("Bergström", "Åsa", "F"),
    ("Mensah", "Kwabena", "M"),
)

_CITIES = ("Springfield", "Riverton", "Lakeside", "Fairview", "Millbrook")
_STREETS = ("Orchard Lane", "Harbour Road", "Station Street", "Elm Avenue", "Quarry Hill")


@dataclass(frozen=True)
class LabTest:
    """One laboratory result: LOINC code and display, UCUM unit, reference range (OBX-7),
    the decimals reported and the span the synthetic values are drawn from."""

    loinc: str
    display: str
    unit: str
    low: str
    high: str
    decimals: int
    spread: tuple[float, float]

    @property
    def reference_range(self) -> str:
        return f"{self.low}-{self.high}"


GLUCOSE = LabTest(
    "2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", "70", "99", 0, (62, 190)
)
SODIUM = LabTest(
    "2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", "136", "145", 0, (129, 149)
)
POTASSIUM = LabTest(
    "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", "3.5", "5.1", 1, (3.1, 5.8)
)
CREATININE = LabTest(
    "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "0.6", "1.3", 2, (0.48, 2.1)
)
HEMOGLOBIN = LabTest(
    "718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", "12.0", "17.5", 1, (9.4, 18.2)
)


@dataclass(frozen=True)
class Panel:
    loinc: str
    display: str
    tests: tuple[LabTest, ...]


BASIC_METABOLIC = Panel(
    "24321-2",
    "Basic metabolic 2000 panel - Serum or Plasma",
    (GLUCOSE, SODIUM, POTASSIUM, CREATININE),
)
BLOOD_COUNT = Panel("58410-2", "CBC panel - Blood by Automated count", (HEMOGLOBIN,))


@dataclass(frozen=True)
class DemoPatient:
    number: int
    mrn: str
    family: str
    given: str
    sex: str
    birth_date: str  # HL7 DT, YYYYMMDD
    street: str
    city: str
    phone: str


@dataclass(frozen=True)
class DemoMessage:
    """One generated message with what a test or the banner needs to know about it."""

    control_id: str
    message_type: str  # MSH-9.1^MSH-9.2, e.g. "ORU^R01"
    patient: DemoPatient
    loinc_codes: tuple[str, ...]
    payload: bytes  # UTF-8, segments ended by CR


@dataclass
class FeedSummary:
    """What became of messages sent over MLLP: ACK codes (MSA-1) counted by code."""

    sent: int = 0
    ack_codes: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0

    @property
    def accepted(self) -> int:
        # CA is the enhanced-mode commit accept; our messages ask for original mode (AA).
        return self.ack_codes["AA"] + self.ack_codes["CA"]

    @property
    def refused(self) -> int:
        return sum(self.ack_codes.values()) - self.accepted


def demo_patients(count: int, seed: int = DEFAULT_SEED) -> list[DemoPatient]:
    rng = random.Random(seed)
    patients = []
    for number in range(count):
        family, given, sex = _NAMES[number % len(_NAMES)]
        birth = datetime(1938, 1, 1) + timedelta(days=rng.randrange(0, 365 * 80))
        patients.append(
            DemoPatient(
                number=number,
                mrn=f"DM{seed % 1000:03d}{number:05d}",
                family=family,
                given=given,
                sex=sex,
                birth_date=birth.strftime("%Y%m%d"),
                street=f"{rng.randrange(1, 240)} {rng.choice(_STREETS)}",
                city=rng.choice(_CITIES),
                phone=f"555-01{rng.randrange(0, 100):02d}",  # 555-0100..0199 are fictional
            )
        )
    return patients


def demo_messages(count: int, seed: int = DEFAULT_SEED) -> list[DemoMessage]:
    """`count` messages, four per patient (see the module docstring), same seed same bytes."""
    if count < 0:
        raise ValueError(f"message count must be 0 or more, got {count}")
    rng = random.Random(seed * 7919 + 1)
    patients = demo_patients((count + 3) // 4, seed)
    clock = _START
    messages: list[DemoMessage] = []
    for patient in patients:
        visit = _Visit("A01" if patient.number % 2 == 0 else "A04", clock)
        moved = False  # the A08 moves the patient; later messages carry the new address
        steps: tuple[str | Panel, ...] = (visit.event, BASIC_METABOLIC, "A08", BLOOD_COUNT)
        for step in steps:
            if len(messages) == count:
                return messages
            clock += timedelta(minutes=rng.randrange(3, 95), seconds=rng.randrange(60))
            if step == visit.event:
                visit = _Visit(visit.event, clock)
            control_id = f"FFD{seed}-{len(messages) + 1:06d}"
            moved = moved or step == "A08"
            if isinstance(step, Panel):
                segments = _oru(patient, moved, visit, step, control_id, clock, rng)
                message_type, codes = "ORU^R01", tuple(t.loinc for t in step.tests)
            else:
                segments = _adt(patient, moved, step, visit, control_id, clock)
                message_type, codes = f"ADT^{step}", ()
            payload = ("\r".join(segments) + "\r").encode("utf-8")
            messages.append(DemoMessage(control_id, message_type, patient, codes, payload))
    return messages


def write_messages(path: Path, messages: list[DemoMessage]) -> None:
    """One message after another, each ended by CR and a newline for readable files
    (readers that split on CR and strip whitespace, as python-hl7's split_file does,
    see the same messages)."""
    with path.open("wb") as out:
        for message in messages:
            out.write(message.payload + b"\n")


async def send_messages(
    host: str, port: int, payloads: list[bytes], timeout: float = 30.0
) -> FeedSummary:
    """Send each payload over one MLLP connection, waiting for its ACK before the next."""
    summary = FeedSummary()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        for payload in payloads:
            writer.write(b"\x0b" + payload + b"\x1c\x0d")
            await writer.drain()
            summary.sent += 1
            try:
                frame = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), timeout)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                summary.unanswered += len(payloads) - summary.sent + 1
                break
            summary.ack_codes[ack_code(frame)] += 1
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    return summary


def ack_code(frame: bytes) -> str:
    """MSA-1 of an ACK frame (AA, AE, AR, CA, CE, CR), or "??" when there is no MSA."""
    text = frame.strip(b"\x0b\x1c\x0d\n").decode("utf-8", errors="replace")
    for segment in text.replace("\n", "\r").split("\r"):
        if segment.startswith("MSA"):
            fields = segment.split(segment[3:4] or "|")
            return fields[1] if len(fields) > 1 and fields[1] else "??"
    return "??"


@dataclass(frozen=True)
class _Visit:
    event: str  # the admitting event: A01 (inpatient admit) or A04 (outpatient registration)
    started: datetime


def _adt(
    patient: DemoPatient,
    moved: bool,
    event: str,
    visit: _Visit,
    control_id: str,
    when: datetime,
) -> list[str]:
    return [
        _msh(f"ADT^{event}^ADT_A01", control_id, when),
        _segment("EVN", {1: event, 2: _ts(when)}),
        _pid(patient, moved),
        _pv1(patient, visit),
    ]


def _oru(
    patient: DemoPatient,
    moved: bool,
    visit: _Visit,
    panel: Panel,
    control_id: str,
    when: datetime,
    rng: random.Random,
) -> list[str]:
    collected = when - timedelta(minutes=rng.randrange(20, 90))
    order = f"{control_id}-O"
    segments = [
        _msh("ORU^R01^ORU_R01", control_id, when),
        _pid(patient, moved),
        _pv1(patient, visit),
        _segment("ORC", {1: "RE", 2: f"{order}^{SENDING_APPLICATION}", 3: f"{order}^DEMOLAB"}),
        _segment(
            "OBR",
            {
                1: "1",
                2: f"{order}^{SENDING_APPLICATION}",
                3: f"{order}^DEMOLAB",
                4: f"{panel.loinc}^{panel.display}^LN",
                7: _ts(collected),
                22: _ts(when),
                24: "HM" if panel is BLOOD_COUNT else "CH",
                25: "F",
            },
        ),
    ]
    for set_id, test in enumerate(panel.tests, start=1):
        value = round(rng.uniform(*test.spread), test.decimals)
        shown = f"{value:.{test.decimals}f}"
        flag = "L" if value < float(test.low) else "H" if value > float(test.high) else "N"
        segments.append(
            _segment(
                "OBX",
                {
                    1: str(set_id),
                    2: "NM",
                    3: f"{test.loinc}^{test.display}^LN",
                    5: shown,
                    6: f"{test.unit}^^UCUM",
                    7: test.reference_range,
                    8: flag,
                    11: "F",
                    14: _ts(collected),
                },
            )
        )
    return segments


def _msh(message_type: str, control_id: str, when: datetime) -> str:
    fields = {
        3: SENDING_APPLICATION,
        4: SENDING_FACILITY,
        5: "FHIRFUSION",
        6: "FHIRFUSION",
        7: _ts(when),
        9: message_type,
        10: control_id,
        11: "P",
        12: HL7_VERSION,
        18: "UNICODE UTF-8",
    }
    # MSH-1 is the field separator itself and MSH-2 the encoding characters.
    return "MSH|^~\\&|" + "|".join(fields.get(i, "") for i in range(3, max(fields) + 1))


def _pid(patient: DemoPatient, moved: bool) -> str:
    street = patient.street
    phone = patient.phone
    if moved:
        # The A08 carries a moved address and a new phone, as a real update would.
        street = f"{int(street.split()[0]) + 7} {' '.join(street.split()[1:])}"
        phone = f"555-01{(int(phone[-2:]) + 11) % 100:02d}"
    identifier = f"{patient.mrn}^^^{ASSIGNING_AUTHORITY}&{ASSIGNING_AUTHORITY_OID}&ISO^MR"
    return _segment(
        "PID",
        {
            1: "1",
            3: identifier,
            5: f"{patient.family}^{patient.given}^^^^^L",
            7: patient.birth_date,
            8: patient.sex,
            11: f"{street}^^{patient.city}^^{10000 + patient.number * 37 % 89999:05d}^USA^H",
            13: f"^PRN^PH^^1^555^{phone[4:]}",
        },
    )


def _pv1(patient: DemoPatient, visit: _Visit) -> str:
    inpatient = visit.event == "A01"
    return _segment(
        "PV1",
        {
            1: "1",
            2: "I" if inpatient else "O",
            3: f"WARD{patient.number % 4 + 1}^{100 + patient.number % 30}^A^{SENDING_FACILITY}"
            if inpatient
            else f"CLINIC^^^{SENDING_FACILITY}",
            7: "D1001^Example^Dana^^^Dr",
            19: f"V{patient.mrn[2:]}^^^{ASSIGNING_AUTHORITY}^VN",
            44: _ts(visit.started),
        },
    )


def _segment(name: str, fields: dict[int, str]) -> str:
    return name + "|" + "|".join(fields.get(i, "") for i in range(1, max(fields) + 1))


def _ts(when: datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S") + "+0000"
