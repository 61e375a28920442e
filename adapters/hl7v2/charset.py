"""The character set of an HL7v2 message: MSH-18 (HL7 table 0211) -> a Python codec.

A message is received as bytes (MLLP frames bytes: 0x0B ... 0x1C 0x0D) and decoded
only once it is whole, by the character set MSH-18 names. MSH itself is ASCII in every
set this server takes, so MSH-18 can be read from the bytes before decoding. Without
MSH-18 the old rule stays: UTF-8 when the bytes are UTF-8, else Latin-1.

Refused (AE naming MSH-18): a value not in table 0211; a set this server does not
decode (ISO 2022 sets, which switch with escape sequences; CNS 11643); UTF-16 and
UTF-32, whose bytes can hold 0x0B and 0x1C, so MLLP cannot frame them (HL7 MLLP
release 2 requires a character set whose encoding does not use those bytes); and bytes
that are not valid in the named set, so a wrong name never stores garbled text.
"""

from __future__ import annotations

import codecs
import re

from adapters.hl7v2.errors import DATA_TYPE_ERROR, TABLE_VALUE_NOT_FOUND, Hl7Error, Location

# HL7 table 0211 (v2.5-v2.8) -> Python codec; "GB 18030" as some senders write it.
CODECS = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "iso8859-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "GB 18030-2000": "gb18030",
    "GB 18030": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
    "UNICODE": "utf-8",  # v2.3-v2.4 "UNICODE", before UTF-8 got a name of its own
    "UNICODE UTF-8": "utf-8",
}

_NOT_DECODED = {
    "UNICODE UTF-16": "UTF-16 cannot be framed by MLLP (its bytes can hold 0x0B and 0x1C)",
    "UNICODE UTF-32": "UTF-32 cannot be framed by MLLP (its bytes can hold 0x0B and 0x1C)",
    "ISO IR14": "ISO 2022 character sets (escape sequences) are not supported",
    "ISO IR87": "ISO 2022 character sets (escape sequences) are not supported",
    "ISO IR159": "ISO 2022 character sets (escape sequences) are not supported",
    "CNS 11643-1992": "CNS 11643 has no decoder here",
}

_BOM = b"\xef\xbb\xbf"
_WHERE = Location("MSH", 1, 18)


def msh18(raw: bytes) -> str:
    """MSH-18's first repetition (the message's character set), read from the bytes."""
    start = raw[3:] if raw.startswith(_BOM) else raw
    start = start.lstrip(b"\x0b\r\n")
    line = re.split(rb"[\r\n]", start, maxsplit=1)[0]
    if not line.startswith(b"MSH") or len(line) < 8:
        return ""
    fields = line.split(line[3:4])
    if len(fields) < 18:
        return ""
    repetition = fields[1][1:2] or b"~"
    value = fields[17].split(repetition)[0]
    return " ".join(value.decode("latin-1").split()).upper()


def codec_for(name: str) -> str:
    """The Python codec for a table 0211 value; Hl7Error (AE) naming MSH-18 otherwise."""
    if name in CODECS:
        return CODECS[name]
    if name in _NOT_DECODED:
        raise Hl7Error(f"MSH-18 character set {name} is not supported: {_NOT_DECODED[name]}",
                       TABLE_VALUE_NOT_FOUND, _WHERE)
    shown = name[:30] if name.isascii() and name.isprintable() else "(not printable)"
    raise Hl7Error(f"MSH-18 character set {shown} is not a value of HL7 table 0211",
                   TABLE_VALUE_NOT_FOUND, _WHERE)


def decode_message(raw: bytes, charset: str | None = None) -> str:
    """The text of one message: by `charset` (a Python codec name, from a transport that
    says, e.g. an HTTP Content-Type) when given, else by MSH-18, else UTF-8 when it
    decodes and Latin-1 otherwise. Hl7Error (AE, MSH-18) for an unknown set or bytes not
    valid in it."""
    data = raw[3:] if raw.startswith(_BOM) else raw
    if charset is None:
        name = msh18(raw)
        if not name:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return data.decode("latin-1")
        codec = codec_for(name)
        said = f"MSH-18 {name}"
    else:
        codec, said = charset, f"the charset {charset}"
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise Hl7Error(f"the message has bytes that are not valid in {said} (byte "
                       f"{exc.start + 1}); nothing was stored", DATA_TYPE_ERROR,
                       _WHERE) from None
    except LookupError:
        raise Hl7Error(f"the charset {charset[:30]} is not known", TABLE_VALUE_NOT_FOUND,
                       _WHERE) from None


def with_charset(raw: bytes, charset: str) -> bytes:
    """A message whose transport names its charset (HTTP `Content-Type: ...; charset=`),
    which takes precedence over MSH-18: as UTF-8 with MSH-18 "UNICODE UTF-8" (so that a
    retry from the dead-letter queue decodes it the same way), or unchanged when it is
    in that charset already. Hl7Error (AE, MSH-18) when the bytes are not valid in it."""
    text = decode_message(raw, charset)
    name = msh18(raw)
    current = CODECS.get(name) if name else "utf-8"
    if current and codecs.lookup(current).name == codecs.lookup(charset).name:
        return raw
    segment, sep, rest = text.partition("\r")
    fields = segment.split(segment[3:4]) if len(segment) > 3 else [segment]
    fields += [""] * (18 - len(fields))
    fields[17] = "UNICODE UTF-8"
    return (segment[3:4].join(fields) + sep + rest).encode("utf-8")


def lenient(raw: bytes) -> str:
    """Text for reading the header of any message (to answer it): never fails."""
    try:
        return decode_message(raw)
    except Hl7Error:
        data = raw[3:] if raw.startswith(_BOM) else raw
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
