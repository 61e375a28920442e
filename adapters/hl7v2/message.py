"""Reading an HL7v2 message into segments, fields, repetitions and components.

Parsing on the hot path uses python-hl7 (`hl7.parse`, about 1 ms for a lab result)
rather than hl7apy (about 20 ms, since it builds a typed element tree against the
version's structure definitions). python-hl7's containers nest to different depths
depending on which separators a field holds, so each segment is normalised once into
plain lists: field -> repetitions -> components -> subcomponents, with escape
sequences already decoded (HL7 v2.5 chapter 2, section 2.7). hl7apy is used only off
the hot path, by `structure.check_structure`.

Accepted framing quirks: a leading UTF-8 byte order mark, segments ended by CR, LF or
CRLF, blank lines between segments, custom delimiters in MSH-1/MSH-2, and an MSH-2 in
which a character is doubled (some senders write the escape character as `\\\\`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import hl7

from adapters.hl7v2.charset import decode_message, lenient
from adapters.hl7v2.errors import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    Hl7Error,
    Location,
)

Component = list[str]  # subcomponents
Repetition = list[Component]
Field = list[Repetition]

_BOM = "\ufeff"
_LINE_BREAKS = re.compile(r"\r\n|\n|\r")
_LINE_BREAK_BYTES = re.compile(rb"\r\n|\n|\r")
_BOM_BYTES = b"\xef\xbb\xbf"
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_START_BLOCK = "\x0b"  # MLLP framing bytes, as found in files captured from a feed
_END_BLOCK = "\x1c"


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent


class Segment:
    """One segment. Field n is numbered as in the standard; for MSH, field 1 is MSH-1
    (the field separator) and field 2 is MSH-2. Fields are normalised from python-hl7's
    containers on first use: most fields of a segment are never read."""

    __slots__ = ("name", "occurrence", "_raw", "_offset", "_delims", "_cache")

    def __init__(self, name: str, raw: list[Any], occurrence: int, delims: Delimiters,
                 offset: int = 0) -> None:
        self.name = name
        self.occurrence = occurrence
        self._raw = raw  # raw[n - offset] is field n
        self._offset = offset
        self._delims = delims
        self._cache: dict[int, Field] = {}

    def __len__(self) -> int:
        return len(self._raw) + self._offset

    def field(self, n: int) -> Field:
        found = self._cache.get(n)
        if found is None:
            i = n - self._offset
            if i < 0 or i >= len(self._raw):
                return []
            found = self._cache[n] = _field(self._raw[i], self._delims.escape, self._delims)
        return found

    @property
    def fields(self) -> list[Field]:
        return [self.field(n) for n in range(len(self))]

    def reps(self, n: int) -> list[Repetition]:
        """The non-empty repetitions of field n."""
        return [rep for rep in self.field(n) if any(any(c) for c in rep)]

    def get(self, n: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str:
        """The text at field n, repetition `rep` (0-based), component and subcomponent
        (1-based), or "" when absent."""
        reps = self.field(n)
        if rep >= len(reps):
            return ""
        return component(reps[rep], comp, sub)

    def has(self, n: int) -> bool:
        return bool(self.reps(n))

    def loc(self, field: int = 0, comp: int = 0) -> Location:
        return Location(self.name, self.occurrence, field, comp)


def component(rep: Repetition, comp: int, sub: int = 1) -> str:
    if comp > len(rep):
        return ""
    subs = rep[comp - 1]
    if sub > len(subs):
        return ""
    value = subs[sub - 1].strip()
    return "" if value == '""' else value  # "" is the HL7 explicit null


class Message:
    """A parsed message: its segments in order and its delimiters."""

    __slots__ = ("segments", "delimiters", "_by_name")

    def __init__(self, segments: list[Segment], delimiters: Delimiters) -> None:
        self.segments = segments
        self.delimiters = delimiters
        by_name: dict[str, list[Segment]] = {}
        for seg in segments:
            by_name.setdefault(seg.name, []).append(seg)
        self._by_name = by_name

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def first(self, name: str) -> Segment | None:
        found = self._by_name.get(name)
        return found[0] if found else None

    def all(self, name: str) -> list[Segment]:
        return self._by_name.get(name, [])

    @property
    def message_type(self) -> str:
        return self.msh.get(9, 1)

    @property
    def trigger_event(self) -> str:
        return self.msh.get(9, 2)

    @property
    def control_id(self) -> str:
        return self.msh.get(10)

    @property
    def version(self) -> str:
        return self.msh.get(12)


def decode(raw: bytes | str) -> str:
    """Bytes to text for reading any message's header (to answer it): by MSH-18 when it
    names a set the bytes are valid in, else UTF-8 when it decodes, else Latin-1; never
    fails. `parse` decodes strictly (adapters/hl7v2/charset.py)."""
    text = raw if isinstance(raw, str) else lenient(raw)
    return text[1:] if text.startswith(_BOM) else text


def normalise(text: str) -> str:
    """One CR after each segment, blank lines dropped, MSH-2 repaired when a
    character in it is doubled."""
    if text.startswith(_BOM):
        text = text[1:]
    lines = [line for line in _LINE_BREAKS.split(text.strip("\x00")) if line.strip()]
    if lines and lines[0].startswith("MSH") and len(lines[0]) > 8:
        lines[0] = _repair_msh2(lines[0])
    return "\r".join(lines)


def _repair_msh2(line: str) -> str:
    sep = line[3]
    end = line.find(sep, 4)
    if end < 0:
        return line
    chars = line[4:end]
    unique = "".join(dict.fromkeys(chars))
    return line if unique == chars else line[:4] + unique + line[end:]


def delimiters_of(text: str) -> Delimiters:
    """Delimiters from MSH-1 and MSH-2 (defaults for any not given)."""
    sep = text[3]
    end = text.find(sep, 4)
    chars = text[4:end] if end > 0 else text[4:]
    defaults = Delimiters()
    return Delimiters(
        field=sep,
        component=chars[0] if len(chars) > 0 else defaults.component,
        repetition=chars[1] if len(chars) > 1 else defaults.repetition,
        escape=chars[2] if len(chars) > 2 else defaults.escape,
        subcomponent=chars[3] if len(chars) > 3 else defaults.subcomponent,
    )


def parse(raw: bytes | str) -> Message:
    """Parse one message. Raises `Hl7Error` (AE) when it has no usable MSH segment, or
    when MSH-18 names an unknown character set or one its bytes are not valid in."""
    text = normalise(decode(raw) if isinstance(raw, str) else decode_message(raw))
    if not text.startswith("MSH"):
        raise Hl7Error("Message does not start with an MSH segment", SEGMENT_SEQUENCE_ERROR,
                       Location("MSH", 1))
    if len(text) < 8 or text[3].isalnum() or text[3] in "\r ":
        raise Hl7Error("MSH-1/MSH-2 delimiters are missing or invalid", REQUIRED_FIELD_MISSING,
                       Location("MSH", 1, 2))
    delims = delimiters_of(text)
    if len(set(delims.encoding_characters + delims.field)) < 5:
        raise Hl7Error("MSH-2 encoding characters are not distinct", DATA_TYPE_ERROR,
                       Location("MSH", 1, 2))
    try:
        parsed = hl7.parse(text)
    except Exception:  # python-hl7 raises several types on malformed input
        raise Hl7Error("Message could not be split into segments", SEGMENT_SEQUENCE_ERROR,
                       Location("MSH", 1)) from None  # its text may quote the message

    segments: list[Segment] = []
    counts: dict[str, int] = {}
    for i, seg in enumerate(parsed):
        name = _text(seg[0])
        if not _SEGMENT_ID.fullmatch(name):
            raise Hl7Error(f"Segment {i + 1} has no valid segment id", SEGMENT_SEQUENCE_ERROR,
                           Location(f"#{i + 1}", 1))
        counts[name] = counts.get(name, 0) + 1
        if name == "MSH":
            # python-hl7 keeps MSH-1 and MSH-2 as fields of their own; never unescaped.
            items = [name, delims.field, delims.encoding_characters, *seg[3:]]
        else:
            items = [name, *seg[1:]]
        segment = Segment(name, items, counts[name], delims)
        segment._cache[0] = [[[name]]]
        if name == "MSH":
            segment._cache[1] = [[[delims.field]]]
            segment._cache[2] = [[[delims.encoding_characters]]]
        segments.append(segment)
    return Message(segments, delims)


def _text(value: object) -> str:
    while isinstance(value, list):
        value = value[0] if value else ""
    return str(value)


def _field(value: Any, esc: str, delims: Delimiters) -> Field:
    """A python-hl7 field (a str, or lists nested as deep as its separators go) as
    repetitions -> components -> subcomponents, unescaped."""
    reps: Field = []
    for rep in value if isinstance(value, list) else [value]:
        if isinstance(rep, str):
            reps.append([[unescape(rep, delims) if esc in rep else rep]])
            continue
        comps: Repetition = []
        for comp in rep:
            if isinstance(comp, str):
                comps.append([unescape(comp, delims) if esc in comp else comp])
            else:
                comps.append([unescape(s, delims) if esc in s else s for s in comp])
        reps.append(comps)
    return reps


# Formatting commands in FT/TX text (section 2.7.6): those that start a new line become
# a newline; the others only change layout and are dropped.
_LINE_COMMANDS = {".br", ".sp", ".fi", ".nf", ".ce"}


def unescape(text: str, delims: Delimiters = Delimiters()) -> str:
    """Decode HL7 escape sequences: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\, \\Xhh..\\ (hex bytes,
    read as UTF-8 when valid, else Latin-1), \\.br\\ and the other formatting commands,
    and highlighting (\\H\\ \\N\\, dropped). An escape character without a closing one is
    kept as it is."""
    esc = delims.escape
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != esc:
            j = text.find(esc, i)
            if j < 0:
                out.append(text[i:])
                break
            out.append(text[i:j])
            i = j
            continue
        end = text.find(esc, i + 1)
        if end < 0:
            out.append(text[i:])
            break
        seq = text[i + 1 : end]
        out.append(_escape_value(seq, delims, esc))
        i = end + 1
    return "".join(out)


def _escape_value(seq: str, delims: Delimiters, esc: str) -> str:
    simple = {
        "F": delims.field,
        "S": delims.component,
        "T": delims.subcomponent,
        "R": delims.repetition,
        "E": delims.escape,
        "H": "",
        "N": "",
    }
    if seq in simple:
        return simple[seq]
    if seq[:1] == "X" and len(seq) > 1 and len(seq) % 2 == 1:
        try:
            data = bytes.fromhex(seq[1:])
        except ValueError:
            return esc + seq + esc
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    if seq[:1] == ".":
        command = seq[:3]
        return "\n" if command in _LINE_COMMANDS else ""
    if seq[:1] in {"C", "M", "Z"}:
        return ""  # character set switches and local escapes carry no text of their own
    return esc + seq + esc


def split_message_bytes(data: bytes) -> list[bytes]:
    """`split_messages` on bytes, each message kept in the bytes (and so the character set)
    it came in; CR after each segment. MSH-18 is read per message when it is parsed."""
    if data.startswith(_BOM_BYTES):
        data = data[3:]
    data = data.replace(b"\x0b", b"\r").replace(b"\x1c", b"\r")
    messages: list[list[bytes]] = []
    for line in _LINE_BREAK_BYTES.split(data):
        if line.startswith(_BOM_BYTES):
            line = line[3:]
        if not line.strip():
            continue
        head = line[:3]
        if head in {b"FHS", b"BHS", b"BTS", b"FTS"}:
            continue
        if head == b"MSH" or not messages:
            messages.append([line])
        else:
            messages[-1].append(line)
    return [b"\r".join(lines) + b"\r" for lines in messages]


def split_messages(data: bytes | str) -> list[str]:
    """Split a file holding one or many messages: each MSH at the start of a segment
    begins a new message. Batch envelopes (FHS, BHS, BTS, FTS) are dropped, and so is
    MLLP framing (0x0B before a message, 0x1C 0x0D after it), as in a capture of a feed."""
    text = decode(data)
    if _START_BLOCK in text or _END_BLOCK in text:
        # a frame boundary is a segment boundary; the CR after 0x1C is a blank line
        text = text.replace(_START_BLOCK, "\r").replace(_END_BLOCK, "\r")
    messages: list[list[str]] = []
    for line in _LINE_BREAKS.split(text):
        if not line.strip():
            continue
        if line.startswith("\ufeff"):
            line = line[1:]
        head = line[:3]
        if head in {"FHS", "BHS", "BTS", "FTS"}:
            continue
        if head == "MSH" or not messages:
            messages.append([line])
        else:
            messages[-1].append(line)
    return ["\r".join(lines) + "\r" for lines in messages]
