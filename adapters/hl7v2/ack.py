"""Acknowledgements (HL7 v2.5 chapter 2, section 2.9.2, original acknowledgement mode).

MSA-1 is AA when the message was stored, AE when its content is in error, AR when it is
of a kind we do not process (or could not be read at all). An ERR segment says why:
ERR-1 (v2.3/2.4 style, segment^sequence^field^code&text) and ERR-2/3/4/8 (v2.5+:
location, table 0357 code, severity, text), so senders of either generation can read it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from adapters.hl7v2.errors import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    ERROR_NAMES,
    Hl7Error,
    Location,
)
from adapters.hl7v2.message import Delimiters, decode, delimiters_of, normalise

_counter = itertools.count(1)


@dataclass(frozen=True)
class Header:
    """The MSH fields an ACK needs, read without parsing the whole message (so even a
    message the parser refuses can be answered)."""

    delimiters: Delimiters
    sending_app: str = ""
    sending_facility: str = ""
    receiving_app: str = ""
    receiving_facility: str = ""
    event: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = "2.5"


def read_header(raw: bytes | str) -> Header:
    text = normalise(decode(raw))
    if not text.startswith("MSH") or len(text) < 8:
        return Header(Delimiters())
    line = text.split("\r", 1)[0]
    try:
        delims = delimiters_of(line)
    except IndexError:
        return Header(Delimiters())
    if not usable(delims):
        return _header_with_standard_delimiters(line, delims.field)
    fields = line.split(delims.field)
    # fields[0] is "MSH", fields[1] is MSH-2; MSH-n is fields[n - 1]

    def msh(n: int) -> str:
        return fields[n - 1] if n - 1 < len(fields) else ""

    event = msh(9).split(delims.component)
    return Header(
        delimiters=delims,
        sending_app=msh(3),
        sending_facility=msh(4),
        receiving_app=msh(5),
        receiving_facility=msh(6),
        event=event[1] if len(event) > 1 else "",
        control_id=msh(10),
        processing_id=msh(11) or "P",
        version=(msh(12).split(delims.component)[0] or "2.5"),
    )


def usable(d: Delimiters) -> bool:
    """Whether MSH-1/MSH-2 give five distinct separators that cannot occur in plain
    values (HL7 v2.5 section 2.5.4); an ACK written with others could not be read."""
    chars = d.field + d.encoding_characters
    return len(set(chars)) == 5 and not any(ch.isalnum() or ch.isspace() for ch in chars)


def _header_with_standard_delimiters(line: str, field_sep: str) -> Header:
    """The header of a message whose encoding characters are unusable: the ACK is written
    with the standard ones (|^~\\&). MSH-10 is still echoed when the field separator
    alone is sound (MSA-2 lets the sender match the answer), escaped for |^~\\&."""
    standard = Delimiters()
    if field_sep.isalnum() or field_sep.isspace() or field_sep in standard.encoding_characters:
        return Header(standard)
    fields = line.split(field_sep)
    control_id = fields[9] if len(fields) > 9 else ""
    return Header(standard, control_id=_escape(control_id, standard))


def _escape(text: str, d: Delimiters) -> str:
    """Escape delimiter characters in text we write into the ACK (section 2.7.1)."""
    out = text.replace(d.escape, f"{d.escape}E{d.escape}")
    for ch, code in ((d.field, "F"), (d.component, "S"), (d.subcomponent, "T"),
                     (d.repetition, "R")):
        out = out.replace(ch, f"{d.escape}{code}{d.escape}")
    return re.sub(r"[\r\n]+", " ", out)


def new_control_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    return f"ACK{stamp}{next(_counter):06d}"


def build_ack(raw: bytes | str, code: str, error: Hl7Error | None = None,
              text: str | None = None, warnings: Sequence[Hl7Error] = ()) -> str:
    """The ACK for `raw`: code AA, AE or AR; `error` gives the ERR segment. Each of
    `warnings` adds an ERR of severity W (ERR-4, table 0516): the message was taken, but
    the sender should know (e.g. an AA for a stored message with a data type problem).
    Segments end with CR."""
    header = read_header(raw)
    d = header.delimiters
    f = d.field
    now = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S+0000")
    msh = f.join([
        "MSH", d.encoding_characters, header.receiving_app, header.receiving_facility,
        header.sending_app, header.sending_facility, now, "",
        d.component.join(["ACK", _escape(header.event, d), "ACK"]),
        new_control_id(), header.processing_id, _escape(header.version, d),
    ])
    segments = [msh]
    msa = ["MSA", code, header.control_id]
    message = text if text is not None else (str(error) if error else "")
    if code != "AA" and message:
        msa.append(_escape(message[:80], d))  # MSA-3 text message (kept for v2.3/2.4)
    segments.append(f.join(msa))
    if code != "AA":
        segments.append(_err(error, message, d))
    segments += [_err(w, str(w), d, severity="W") for w in warnings]
    return "\r".join(segments) + "\r"


def _err(error: Hl7Error | None, message: str, d: Delimiters, severity: str = "E") -> str:
    f, c, s = d.field, d.component, d.subcomponent
    code = error.code if error else APPLICATION_INTERNAL_ERROR
    where = error.location if error else Location()
    name = ERROR_NAMES.get(code, "Error")
    text = _escape(message, d)
    # ERR-1 (ELD, up to v2.4): segment id ^ sequence ^ field position ^ code&text&table
    err1 = c.join([where.segment, str(where.occurrence) if where.segment else "",
                   str(where.field) if where.field else "",
                   s.join([code, _escape(name, d), "HL70357"])])
    # ERR-2 (ERL): segment ^ sequence ^ field ^ field repetition ^ component
    err2 = c.join([where.segment, str(where.occurrence) if where.segment else "",
                   str(where.field) if where.field else "", "1" if where.field else "",
                   str(where.component) if where.component else ""]).rstrip(c)
    if not where.segment or where.segment.startswith("#"):
        err1 = c.join(["", "", "", s.join([code, _escape(name, d), "HL70357"])])
        err2 = ""
    err3 = c.join([code, _escape(name, d), "HL70357"])
    return f.join(["ERR", err1, err2, err3, severity, "", "", "", text])


def ack_for_exception(raw: bytes | str, exc: BaseException) -> str:
    """AE/AR for a rejection: an Hl7Error answers as it says; a FHIR validation error
    AE 102, a store conflict AE 207, any other failure AR 207."""
    if isinstance(exc, Hl7Error):
        return build_ack(raw, exc.ack_code, exc)
    from fhir_server.errors import FHIRError

    if isinstance(exc, FHIRError) and exc.status == 400:
        err = Hl7Error("The translated resources failed FHIR validation: "
                       + "; ".join(i.diagnostics for i in exc.issues)[:200], DATA_TYPE_ERROR)
        return build_ack(raw, "AE", err)
    err = Hl7Error(f"The message could not be stored ({type(exc).__name__})",
                   APPLICATION_INTERNAL_ERROR)
    # A conflict found by the store is about this message's content (AE); anything else
    # is this receiver failing, which original mode answers AR ("try again later").
    return build_ack(raw, "AE" if isinstance(exc, FHIRError) else "AR", err)
