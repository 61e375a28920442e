"""DICOM person names (PN, PS3.5 6.2.1) as FHIR HumanName entries.

A PN value has up to three component groups separated by '=': alphabetic, ideographic
and phonetic (e.g. Yamada^Tarou=山田^太郎=やまだ^たろう). Each non-empty group becomes
one HumanName. The ideographic and phonetic ones carry the core extension
http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation with code IDE or
SYL (ISO 21090 EntityNameUse: ABC alphabetic, IDE ideographic, SYL syllabic); the
alphabetic one carries ABC only when another group is present, so a plain name stays
plain. Components are family^given^middle^prefix^suffix. HumanName.text is the name as
written: given name first for the alphabetic group; family name first for the others,
without spaces for ideographs (山田太郎) and with one for phonetic text (やまだ たろう).
"""

from __future__ import annotations

from typing import Any

from pydicom.valuerep import PersonName

REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"

JSON = dict[str, Any]


def human_names(value: Any) -> list[JSON]:
    """HumanName entries for a decoded PN value (pydicom PersonName or text)."""
    if value is None:
        return []
    if isinstance(value, PersonName):
        groups = [value.alphabetic, value.ideographic, value.phonetic]
    else:
        groups = (str(value).split("=") + ["", ""])[:3]
    present = [g for g in groups if g.strip(" ^")]
    names = []
    for code, group in zip(("ABC", "IDE", "SYL"), groups):
        name = _group(group, code)
        if name is None:
            continue
        if code != "ABC" or len(present) > 1:
            name = {"extension": [{"url": REPRESENTATION, "valueCode": code}], **name}
        names.append(name)
    return names


def _group(group: str, code: str) -> JSON | None:
    if not group.strip(" ^"):
        return None
    parts = [p.strip() for p in (group.split("^") + [""] * 5)[:5]]
    family, given, middle, prefix, suffix = parts
    if code == "ABC":
        text = " ".join(p for p in (prefix, given, middle, family, suffix) if p)
    else:
        # CJK names are written family name first; ideographs without spaces
        text = ("" if code == "IDE" else " ").join(
            p for p in (prefix, family, given, middle, suffix) if p)
    name: JSON = {"text": text}
    if family:
        name["family"] = family
    givens = [g for g in (given, middle) if g]
    if givens:
        name["given"] = givens
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name
