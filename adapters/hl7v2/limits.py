"""Checks made on a received HL7v2 message before it is parsed.

MLLP (HL7 v2 Transport Specification: MLLP, release 2) carries one message per block, so a
block holding a second MSH is refused with AE naming that MSH rather than answered for the
first message alone (the second would otherwise be lost without anyone knowing). A
message whose segments or field repetitions outnumber what one input may make is refused
before the seconds of parsing it would cost.
"""

from __future__ import annotations

import re

from adapters.hl7v2.errors import (
    APPLICATION_INTERNAL_ERROR,
    SEGMENT_SEQUENCE_ERROR,
    Hl7Error,
    Location,
)

_SEGMENT_END = re.compile(rb"\r\n|\r|\n")


def check_message(message: bytes, max_items: int) -> Hl7Error | None:
    """The reason to refuse `message` unread, or None. `max_items` bounds the segments of
    the message and the repetitions of any one field (PID-3 with 20,000 identifiers)."""
    segments = [s for s in _SEGMENT_END.split(message) if s.strip()]
    headers = [n for n, s in enumerate(segments) if s.lstrip()[:3] == b"MSH"]
    if len(headers) > 1:
        second = segments[headers[1]].lstrip()
        sep = second[3:4] or b"|"
        fields = second.split(sep)
        control = fields[9].decode("ascii", "replace")[:40] if len(fields) > 9 else ""
        shown = f" (MSH-10 {control!r})" if control.isprintable() and control else ""
        return Hl7Error(
            f"One MLLP block holds {len(headers)} messages: a second MSH{shown} starts at "
            f"segment {headers[1] + 1}; send one message per block",
            SEGMENT_SEQUENCE_ERROR, Location("MSH", 2))
    if len(segments) > max_items:
        return Hl7Error(
            f"The message has {len(segments)} segments; this server takes at most "
            f"{max_items} per message", APPLICATION_INTERNAL_ERROR)
    first = segments[0].lstrip() if segments else b""
    repetition = first[5:6] if first[:3] == b"MSH" and len(first) > 5 else b"~"
    for segment in segments:
        if segment.count(repetition) <= max_items:
            continue  # cheap test first: no field can repeat more than the segment holds
        field_sep = segment.lstrip()[3:4] or b"|"
        for position, field in enumerate(segment.split(field_sep)):
            if field.count(repetition) >= max_items:
                name = segment.lstrip()[:3].decode("ascii", "replace")
                return Hl7Error(
                    f"A field repeats more than {max_items} times; this server takes at "
                    f"most {max_items} repetitions", APPLICATION_INTERNAL_ERROR,
                    Location(name, 1, position if name != "MSH" else position + 1))
    return None
