"""HL7 v2 data types (chapter 2A) to FHIR data types.

Times: a DTM keeps its precision (year, month, day stay partial; FHIR has no hour or
minute precision, so those are completed with zeros). FHIR requires an offset on a
dateTime with a time; a DTM without one is read in the configured local time zone
(`Hl7Options.local_tz`, UTC by default) and written with that zone's offset.

Identifier systems (CX-4 / EI-2..4 / HD): a universal id of type ISO becomes
`urn:oid:<oid>`, of type UUID `urn:uuid:<uuid>`, of type URI the URI itself; a few
well-known authorities map to their FHIR systems (USSSA -> us-ssn, NPI -> us-npi);
any other namespace id becomes `urn:fhir-fusion:hl7v2:authority:<namespace>`
(percent-encoded). An identifier without an authority is scoped to the sender:
`urn:fhir-fusion:hl7v2:authority:<MSH-4 namespace or MSH-3>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from adapters.hl7v2 import tables
from adapters.hl7v2.errors import DATA_TYPE_ERROR, Hl7Error, Location
from adapters.hl7v2.message import Repetition, component

AUTHORITY_PREFIX = "urn:fhir-fusion:hl7v2:authority:"

JSON = dict[str, Any]

_DTM = re.compile(
    r"(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.(?P<frac>\d{1,4}))?(?P<tz>[+-]\d{4})?"
)


@dataclass(frozen=True)
class Hl7Options:
    """How messages are read. `local_tz` is the zone of times sent without an offset;
    `check_structure` runs hl7apy's structure check (slow, off by default)."""

    local_tz: tzinfo = timezone.utc
    check_structure: bool = False


def dtm(value: str, loc: Location, options: Hl7Options, *, date_only: bool = False) -> str | None:
    """A DTM/TS/DT as a FHIR dateTime (or date when `date_only`). Raises Hl7Error 102
    naming `loc` when the text is not a DTM."""
    value = value.strip()
    if not value:
        return None
    m = _DTM.fullmatch(value)
    bad_month = m is not None and m["mo"] is not None and not 1 <= int(m["mo"]) <= 12
    if not m or bad_month or (m["d"] and not 1 <= int(m["d"]) <= 31):
        raise Hl7Error("Value is not a valid HL7 date/time (DTM)", DATA_TYPE_ERROR, loc)
    year, month, day = m["y"], m["mo"], m["d"]
    if not month:
        return year
    if not day:
        return f"{year}-{month}"
    date = f"{year}-{month}-{day}"
    try:
        datetime(int(year), int(month), int(day))
    except ValueError:
        raise Hl7Error("Value is not a valid calendar date", DATA_TYPE_ERROR, loc) from None
    if date_only or not m["h"]:
        return date
    hour, minute, second = m["h"], m["mi"] or "00", m["s"] or "00"
    if int(hour) > 23 or int(minute) > 59 or int(second) > 59:
        raise Hl7Error("Value has an invalid time of day", DATA_TYPE_ERROR, loc)
    frac = f".{m['frac']}" if m["frac"] else ""
    if m["tz"]:
        tz = m["tz"]
        offset = f"{tz[:3]}:{tz[3:]}"
    else:
        offset = _offset(options.local_tz, int(year), int(month), int(day), int(hour))
    return f"{date}T{hour}:{minute}:{second}{frac}{offset}"


def _offset(tz: tzinfo, year: int, month: int, day: int, hour: int) -> str:
    delta = tz.utcoffset(datetime(year, month, day, hour)) or timedelta(0)
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def is_instant(value: str | None) -> bool:
    """FHIR instant needs a time to the second with an offset."""
    return bool(value) and "T" in value  # type: ignore[operator]


def decimal(text: str) -> Decimal | None:
    """A decimal kept with its own digits ("1.50" stays 1.50); None when not a number."""
    text = text.strip()
    if not text or not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", text):
        return None
    try:
        value = Decimal(text.lstrip("+"))
    except InvalidOperation:
        return None
    if text.startswith("."):
        value = Decimal("0" + text)
    return value


def hd_system(namespace: str, universal_id: str, universal_type: str) -> str | None:
    """The identifier system an HD (or EI components 2..4) names."""
    kind = universal_type.upper()
    if universal_id:
        if kind == "ISO" or (not kind and re.fullmatch(r"\d+(\.\d+)+", universal_id)):
            return f"urn:oid:{universal_id}"
        if kind == "UUID" or kind == "GUID":
            return f"urn:uuid:{universal_id.lower()}"
        if kind in {"URI", "URL"}:
            return universal_id
    if namespace:
        known = tables.KNOWN_AUTHORITIES.get(namespace.upper())
        return known or AUTHORITY_PREFIX + quote(namespace, safe="")
    if universal_id:
        return AUTHORITY_PREFIX + quote(universal_id, safe="")
    return None


def sender_system(msh: Any) -> str:
    """The identifier system for identifiers sent without an assigning authority."""
    facility = msh.get(4) or msh.get(4, 2) or msh.get(3) or "unknown-sender"
    return AUTHORITY_PREFIX + quote(facility, safe="")


def identifier(rep: Repetition, default_system: str) -> JSON | None:
    """A CX (PID-3 and the like) as an Identifier with system from CX-4 and type from CX-5."""
    value = component(rep, 1)
    if not value:
        return None
    system = hd_system(component(rep, 4, 1), component(rep, 4, 2), component(rep, 4, 3))
    out: JSON = {"system": system or default_system, "value": value}
    id_type = component(rep, 5)
    if id_type:
        out["type"] = {"coding": [{"system": tables.V2_TABLE.format(203), "code": id_type}]}
    return out


def entity_identifier(rep: Repetition, default_system: str) -> JSON | None:
    """An EI (placer/filler order numbers) as an Identifier."""
    value = component(rep, 1)
    if not value:
        return None
    system = hd_system(component(rep, 2), component(rep, 3), component(rep, 4))
    return {"system": system or default_system, "value": value}


def human_name(rep: Repetition) -> JSON | None:
    """An XPN (or the name part of an XCN starting at component 2) as a HumanName."""
    return _name(rep, 0)


def _name(rep: Repetition, shift: int) -> JSON | None:
    family = component(rep, 1 + shift)
    given = [g for g in (component(rep, 2 + shift), component(rep, 3 + shift)) if g]
    suffix = [s for s in (component(rep, 4 + shift), component(rep, 6 + shift)) if s]
    prefix = component(rep, 5 + shift)
    if not (family or given):
        return None
    out: JSON = {}
    name_type = component(rep, 7 + shift)
    if name_type and name_type in tables.NAME_USE:
        out["use"] = tables.NAME_USE[name_type]
    if family:
        out["family"] = family
    if given:
        out["given"] = given
    if prefix:
        out["prefix"] = [prefix]
    if suffix:
        out["suffix"] = suffix
    return out


def xcn_name(rep: Repetition) -> JSON | None:
    """The person name inside an XCN (components 2..7, name type in 10)."""
    name = _name(rep, 1)
    if name is not None:
        name.pop("use", None)
        name_type = component(rep, 10)
        if name_type in tables.NAME_USE:
            name["use"] = tables.NAME_USE[name_type]
    return name


def name_display(name: JSON) -> str:
    parts = [*name.get("prefix", []), *name.get("given", []), name.get("family", "")]
    return " ".join(p for p in parts if p)


def address(rep: Repetition) -> JSON | None:
    """An XAD as an Address."""
    # XAD-1 is an SAD: the street line, or its parts (number & street name & dwelling).
    street = " ".join(s.strip() for s in rep[0] if s.strip() and s.strip() != '""') if rep else ""
    line = [part for part in (street, component(rep, 2)) if part]
    city, state, postal, country = (component(rep, i) for i in (3, 4, 5, 6))
    district = component(rep, 9)
    if not (line or city or state or postal or country):
        return None
    out: JSON = {}
    kind = component(rep, 7)
    if kind in tables.ADDRESS_USE:
        out["use"] = tables.ADDRESS_USE[kind]
    if kind in tables.ADDRESS_TYPE:
        out["type"] = tables.ADDRESS_TYPE[kind]
    if line:
        out["line"] = line
    for key, value in (("city", city), ("district", district), ("state", state),
                       ("postalCode", postal), ("country", country)):
        if value:
            out[key] = value
    return out


def contact_point(rep: Repetition, default_use: str | None) -> JSON | None:
    """An XTN as a ContactPoint: XTN-1 (older versions) or area code and local number
    (XTN-6, XTN-7, extension XTN-8), or the e-mail address in XTN-4."""
    equipment = component(rep, 3)
    email = component(rep, 4)
    number = component(rep, 1)
    if not number:
        area, local, ext = component(rep, 6), component(rep, 7), component(rep, 8)
        if local:
            number = f"({area}) {local}" if area else local
            if ext:
                number += f" ext. {ext}"
    system = tables.TELECOM_SYSTEM.get(equipment)
    if email and (system == "email" or not number):
        number, system = email, "email"
    if not number:
        return None
    out: JSON = {"system": system or "phone", "value": number}
    use = tables.TELECOM_USE.get(component(rep, 2)) or default_use
    if equipment == "CP":
        use = "mobile"
    if use:
        out["use"] = use
    return out


def codeable_concept(rep: Repetition, *, local_system: str | None = None) -> JSON | None:
    """A CE/CWE/CNE as a CodeableConcept: the identifier triplet (1..3) and the
    alternate one (4..6), original text from CWE-9. A code in a local coding system is
    kept with `local_system` as system when given, else without a system."""
    codings = []
    for base in (1, 4):
        code, display, system_name = (component(rep, base + i) for i in range(3))
        if not (code or display):
            continue
        coding: JSON = {}
        system = tables.coding_system(system_name)
        if system is None and code and local_system and system_name:
            system = local_system + quote(system_name, safe="")
        if system:
            coding["system"] = system
        if code:
            coding["code"] = code
        if display:
            coding["display"] = display
        if code:
            codings.append(coding)
    text = component(rep, 9) or (component(rep, 2) if not codings else "")
    if not codings and not text:
        return None
    out: JSON = {}
    if codings:
        out["coding"] = codings
    if text:
        out["text"] = text
    return out


def code_text(rep: Repetition) -> str:
    """A readable text for a coded value: original text, else the first display, else code."""
    return component(rep, 9) or component(rep, 2) or component(rep, 1) or component(rep, 5)
