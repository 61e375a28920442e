"""The generated demo feed: valid HL7 v2.5.1, real LOINC/UCUM content, deterministic."""

from __future__ import annotations

import asyncio
import unicodedata
from pathlib import Path

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from fhir_server import demo

# LOINC code -> UCUM unit, as the brief for the feed and the LOINC table give them.
EXPECTED_UNITS = {
    "2345-7": "mg/dL",  # Glucose [Mass/volume] in Serum or Plasma
    "718-7": "g/dL",  # Hemoglobin [Mass/volume] in Blood
    "2823-3": "mmol/L",  # Potassium [Moles/volume] in Serum or Plasma
    "2951-2": "mmol/L",  # Sodium [Moles/volume] in Serum or Plasma
    "2160-0": "mg/dL",  # Creatinine [Mass/volume] in Serum or Plasma
}


def _parsed(message: demo.DemoMessage) -> hl7.Message:
    return hl7.parse(message.payload.decode("utf-8"))


def test_same_seed_gives_identical_bytes_and_another_seed_does_not() -> None:
    first = [m.payload for m in demo.demo_messages(24, seed=7)]
    again = [m.payload for m in demo.demo_messages(24, seed=7)]
    other = [m.payload for m in demo.demo_messages(24, seed=8)]
    assert first == again
    assert first != other
    assert len(first) == 24


def test_message_types_follow_the_admit_result_update_result_cycle() -> None:
    types = [str(_parsed(m).segment("MSH")[9]) for m in demo.demo_messages(8)]
    assert types == [
        "ADT^A01^ADT_A01",
        "ORU^R01^ORU_R01",
        "ADT^A08^ADT_A01",
        "ORU^R01^ORU_R01",
        "ADT^A04^ADT_A01",
        "ORU^R01^ORU_R01",
        "ADT^A08^ADT_A01",
        "ORU^R01^ORU_R01",
    ]


def test_count_is_exact_even_when_not_a_multiple_of_four() -> None:
    assert len(demo.demo_messages(7)) == 7
    assert demo.demo_messages(0) == []
    with pytest.raises(ValueError, match="-1"):
        demo.demo_messages(-1)


@pytest.mark.parametrize("message", demo.demo_messages(8), ids=lambda m: m.control_id)
def test_every_message_passes_hl7apy_strict_v251_validation(message: demo.DemoMessage) -> None:
    text = message.payload.decode("utf-8")
    parsed = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert parsed.validate() is True
    assert parsed.msh.msh_12.to_er7() == "2.5.1"
    assert parsed.msh.msh_18.to_er7() == "UNICODE UTF-8"


def test_segments_are_separated_by_carriage_returns_only() -> None:
    for message in demo.demo_messages(8):
        assert b"\n" not in message.payload
        assert message.payload.endswith(b"\r")
        assert message.payload.startswith(b"MSH|^~\\&|")


def test_lab_results_carry_loinc_codes_ucum_units_and_consistent_flags() -> None:
    seen: set[str] = set()
    for message in demo.demo_messages(40):
        parsed = _parsed(message)
        for obx in parsed.segments("OBX") if message.message_type == "ORU^R01" else []:
            code, system = str(obx[3][0][0]), str(obx[3][0][2])
            assert system == "LN"
            assert str(obx[6][0][0]) == EXPECTED_UNITS[code]
            assert str(obx[6][0][2]) == "UCUM"
            low, high = (float(x) for x in str(obx[7]).split("-"))
            value = float(str(obx[5]))
            expected_flag = "L" if value < low else "H" if value > high else "N"
            assert str(obx[8]) == expected_flag
            seen.add(code)
    assert seen == set(EXPECTED_UNITS)


def test_patients_have_unique_mrns_with_an_assigning_authority() -> None:
    patients = demo.demo_patients(20)
    assert len({p.mrn for p in patients}) == 20
    pid = _parsed(demo.demo_messages(1)[0]).segment("PID")
    assert str(pid[3][0][0]) == patients[0].mrn
    assert str(pid[3][0][3][0]) == demo.ASSIGNING_AUTHORITY
    assert str(pid[3][0][4]) == "MR"


def test_names_include_accented_and_chinese_ones() -> None:
    names = [(p.family, p.given) for p in demo.demo_patients(16)]
    text = "".join(f + g for f, g in names)
    accented = [c for c in text if unicodedata.decomposition(c).split()[1:2]]
    chinese = [c for c in text if "CJK UNIFIED IDEOGRAPH" in unicodedata.name(c, "")]
    assert accented, "expected Latin names with diacritics"
    assert chinese, "expected names written in Chinese characters"
    # and they survive the UTF-8 round trip into PID-5
    pids = [_parsed(m).segment("PID") for m in demo.demo_messages(64)]
    assert {str(p[5][0][0]) for p in pids} == {f for f, _ in names}


def test_written_file_splits_back_into_the_same_messages(tmp_path: Path) -> None:
    messages = demo.demo_messages(9)
    out = tmp_path / "demo.hl7"
    demo.write_messages(out, messages)
    split = hl7.split_file(out.read_bytes().decode("utf-8"))
    assert [s.encode("utf-8") for s in split] == [m.payload for m in messages]


def test_ack_code_reads_msa_1() -> None:
    frame = b"\x0bMSH|^~\\&|A|B|C|D|20261102||ACK^A01|1|P|2.5.1\rMSA|AE|FFD-1\r\x1c\x0d"
    assert demo.ack_code(frame) == "AE"
    assert demo.ack_code(b"\x0bMSH|^~\\&|A\r\x1c\x0d") == "??"


def test_send_messages_counts_ack_codes_from_a_scripted_peer() -> None:
    """A fake MLLP peer answers AA, then AR, then closes without answering."""
    answers = [b"AA", b"AR"]

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for code in answers:
            frame = await reader.readuntil(b"\x1c\x0d")
            assert frame.startswith(b"\x0bMSH|")
            writer.write(b"\x0bMSH|^~\\&|R|R|S|S|1||ACK|9|P|2.5.1\rMSA|" + code + b"|x\r\x1c\x0d")
            await writer.drain()
        await reader.readuntil(b"\x1c\x0d")
        writer.close()

    async def scenario() -> demo.FeedSummary:
        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            payloads = [m.payload for m in demo.demo_messages(4)]
            return await demo.send_messages("127.0.0.1", port, payloads, timeout=5)

    summary = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert summary.ack_codes == {"AA": 1, "AR": 1}
    assert summary.accepted == 1
    assert summary.refused == 1
    assert summary.unanswered == 2
