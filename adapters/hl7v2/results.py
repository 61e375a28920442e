"""OBR -> DiagnosticReport and OBX -> Observation (HL7 v2.5 chapter 7, sections 7.4.1
and 7.4.2).

A report is matched on its filler order number (OBR-3, else ORC-3), else its placer
order number (OBR-2, else ORC-2). Each of its observations is matched on the same
identifier system with value `<order number>-obx<set id>` (OBX-1, or the OBX's position
in its OBR group when OBX-1 is empty or repeated).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2 import tables
from adapters.hl7v2.errors import DATA_TYPE_ERROR, REQUIRED_FIELD_MISSING, Hl7Error
from adapters.hl7v2.message import Repetition, Segment, component

JSON = dict[str, Any]

LOCAL_CODES = "urn:fhir-fusion:hl7v2:codesystem:"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"

# Units written as UCUM codes by many senders without naming the coding system. Only
# exact (case-sensitive) UCUM spellings are here; "MG/DL" or "beats/min" are not UCUM.
PLAIN_UCUM = frozenset({
    "%", "/min", "{beats}/min", "mm[Hg]", "Cel", "[degF]", "kg", "g", "mg", "ug", "ng", "pg",
    "L", "dL", "mL", "uL", "fL", "mol/L", "mmol/L", "umol/L", "nmol/L", "pmol/L", "g/L",
    "g/dL", "mg/dL", "mg/L", "ug/L", "ug/dL", "ng/mL", "ng/dL", "pg/mL", "U/L", "[IU]/L",
    "m[IU]/L", "mL/min", "mL/min/{1.73_m2}", "cm", "m", "mm", "kg/m2", "s", "min", "h", "d",
    "wk", "mo", "a", "meq/L", "mosm/kg", "10*3/uL", "10*6/uL", "10*9/L", "10*12/L", "/uL",
    "{cells}/uL", "[in_i]", "[lb_av]", "[oz_av]", "%{saturation}", "g/mol", "mg/kg", "/h",
    "{ratio}", "1",
})

_RANGE = re.compile(
    r"\s*(?P<low>[+-]?\d+(?:\.\d+)?)\s*(?:-|to|–)\s*(?P<high>[+-]?\d+(?:\.\d+)?)\s*"
)
_BOUND = re.compile(r"\s*(?P<op><=|>=|<|>)\s*(?P<num>[+-]?\d+(?:\.\d+)?)\s*")
_COMPARATORS = {"<": "<", ">": ">", "<=": "<=", ">=": ">="}


def order_identifiers(obr: Segment, orc: Segment | None, sender: str) -> list[JSON]:
    """Placer (PLAC) and filler (FILL) order numbers of an OBR, falling back to its ORC."""
    found = []
    for field, kind in ((2, "PLAC"), (3, "FILL")):
        reps = obr.reps(field) or (orc.reps(field) if orc is not None else [])
        ident = dt.entity_identifier(reps[0], sender) if reps else None
        if ident is not None:
            ident["type"] = {"coding": [{"system": IDENTIFIER_TYPE, "code": kind}]}
            found.append(ident)
    return found


def report_key(idents: list[JSON]) -> JSON | None:
    for kind in ("FILL", "PLAC"):
        for ident in idents:
            if ident["type"]["coding"][0]["code"] == kind:
                return {"system": ident["system"], "value": ident["value"]}
    return None


def diagnostic_report(obr: Segment, idents: list[JSON], options: dt.Hl7Options) -> JSON:
    code = dt.codeable_concept(obr.reps(4)[0], local_system=LOCAL_CODES) if obr.has(4) else None
    if code is None:
        raise Hl7Error("OBR-4 universal service identifier is empty", REQUIRED_FIELD_MISSING,
                       obr.loc(4))
    status = tables.REPORT_STATUS.get(obr.get(25).upper(), "unknown")
    report: JSON = {"resourceType": "DiagnosticReport", "status": status, "code": code}
    if idents:
        report["identifier"] = idents
    section = obr.get(24)
    if section:
        report["category"] = [{"coding": [{"system": tables.V2_TABLE.format(74),
                                           "code": section}]}]
    start = dt.dtm(obr.get(7), obr.loc(7), options)
    end = dt.dtm(obr.get(8), obr.loc(8), options)
    if start and end:
        report["effectivePeriod"] = {"start": start, "end": end}
    elif start:
        report["effectiveDateTime"] = start
    issued = dt.dtm(obr.get(22), obr.loc(22), options)
    if dt.is_instant(issued):
        report["issued"] = issued
    return report


def observation(obx: Segment, obr: Segment | None, options: dt.Hl7Options,
                warnings: list[Hl7Error] | None = None) -> JSON:
    """The Observation for one OBX; subject, encounter and identifier are set by the caller.
    Problems that do not stop the message (a non-numeric NM) are added to `warnings`."""
    status = tables.OBSERVATION_STATUS.get(obx.get(11).upper(), "unknown")
    code = dt.codeable_concept(obx.reps(3)[0], local_system=LOCAL_CODES) if obx.has(3) else None
    if code is None and obr is not None and obr.has(4):
        # Report text lines (TX/FT) are often sent without their own OBX-3; they are
        # lines of the report the OBR names.
        code = dt.codeable_concept(obr.reps(4)[0], local_system=LOCAL_CODES)
    if code is None:
        raise Hl7Error("OBX-3 observation identifier is empty", REQUIRED_FIELD_MISSING,
                       obx.loc(3))
    obs: JSON = {"resourceType": "Observation", "status": status, "code": code}
    unit = _unit(obx.reps(6)[0]) if obx.has(6) else None
    value = _value(obx, unit, options)
    if value:
        obs.update(value)
        if obx.get(2).upper() == "NM" and "valueString" in value:
            # kept as sent, but the sender is told (ACK AA with an ERR of severity W)
            problem = "OBX-5 is not a number although OBX-2 says NM; kept as text"
            obs["note"] = [{"text": problem}]
            if warnings is not None:
                warnings.append(Hl7Error(problem, DATA_TYPE_ERROR, obx.loc(5)))
    when = dt.dtm(obx.get(14), obx.loc(14), options)
    if when is None and obr is not None:
        when = dt.dtm(obr.get(7), obr.loc(7), options)
    if when:
        obs["effectiveDateTime"] = when
    ranges = _reference_range(obx.get(7), unit)
    if ranges:
        obs["referenceRange"] = [ranges]
    flags = [_interpretation(rep) for rep in obx.reps(8)]
    if flags:
        obs["interpretation"] = flags
    method = obx.reps(17)
    if method:
        concept = dt.codeable_concept(method[0], local_system=LOCAL_CODES)
        if concept:
            obs["method"] = concept
    return obs


def _unit(rep: Repetition) -> JSON:
    code, text, system_name = component(rep, 1), component(rep, 2), component(rep, 3)
    unit: JSON = {"unit": text or code}
    if code and (system_name.upper() in {"UCUM", "ANS+"} or code in PLAIN_UCUM):
        unit["system"] = tables.UCUM
        unit["code"] = code
    return unit


def _quantity(number: Decimal, unit: JSON | None) -> JSON:
    quantity: JSON = {"value": number}
    if unit:
        quantity.update(unit)
    return quantity


def _value(obx: Segment, unit: JSON | None, options: dt.Hl7Options) -> JSON | None:
    kind = obx.get(2).upper()
    reps = obx.reps(5)
    if not reps:
        return None
    first = reps[0]
    if kind in {"ST", "TX", "FT"}:
        lines = ["^".join(sub[0] if sub else "" for sub in rep).rstrip("^") for rep in reps]
        return {"valueString": "\n".join(lines)}
    if kind == "NM":
        return _numeric(component(first, 1), unit)
    if kind in {"CE", "CWE", "CNE", "CF"}:
        concept = dt.codeable_concept(first, local_system=LOCAL_CODES)
        return {"valueCodeableConcept": concept} if concept else None
    if kind == "SN":
        return _structured_numeric(first, unit)
    if kind in {"DT", "TS", "DTM"}:
        when = dt.dtm(component(first, 1), obx.loc(5), options, date_only=kind == "DT")
        return {"valueDateTime": when} if when else None
    if kind == "TM":
        digits = component(first, 1)
        if len(digits) >= 4 and digits[:4].isdigit():
            seconds = digits[4:6] if digits[4:6].isdigit() else "00"
            return {"valueTime": f"{digits[:2]}:{digits[2:4]}:{seconds}"}
    if kind == "RP":  # reference pointer: the pointer itself (component 1)
        pointer = component(first, 1)
        return {"valueString": pointer} if pointer else None
    text = " ".join(c[0] for c in first if c and c[0])
    return {"valueString": text} if text else None


def _numeric(text: str, unit: JSON | None) -> JSON:
    number = dt.decimal(text)
    if number is not None:
        return {"valueQuantity": _quantity(number, unit)}
    bound = _BOUND.fullmatch(text)
    if bound:  # "<15" sent as NM: read as a bound, like SN
        quantity = _quantity(dt.decimal(bound["num"]) or Decimal(0), unit)
        quantity["comparator"] = _COMPARATORS[bound["op"]]
        return {"valueQuantity": quantity}
    return {"valueString": text}


def _structured_numeric(rep: Repetition, unit: JSON | None) -> JSON | None:
    """SN: comparator, number, separator/suffix, number (chapter 2A, section 2A.72)."""
    op, num1, sep, num2 = (component(rep, i) for i in (1, 2, 3, 4))
    first = dt.decimal(num1)
    second = dt.decimal(num2)
    text = "".join((op, num1, sep, num2))
    if first is None and second is None:
        return {"valueString": text} if text else None
    if sep in {"-"} and first is not None and second is not None and not op:
        return {"valueRange": {"low": _quantity(first, unit), "high": _quantity(second, unit)}}
    if sep in {":", "/"} and first is not None and second is not None and not op:
        return {"valueRatio": {"numerator": _quantity(first, unit),
                               "denominator": {"value": second}}}
    if first is not None and not sep and not num2:
        quantity = _quantity(first, unit)
        if op in _COMPARATORS:
            quantity["comparator"] = _COMPARATORS[op]
        elif op not in {"", "="}:
            return {"valueString": text}
        return {"valueQuantity": quantity}
    return {"valueString": text}


def _reference_range(text: str, unit: JSON | None) -> JSON | None:
    """OBX-7: "3.5-5.0", "4.3 to 6.2", "<5", ">10"; any other text is kept as text."""
    if not text or not any(ch.isalnum() for ch in text):
        return None
    simple = {k: v for k, v in (unit or {}).items() if k in {"unit", "system", "code"}}
    m = _RANGE.fullmatch(text)
    if m:
        low, high = dt.decimal(m["low"]), dt.decimal(m["high"])
        if low is not None and high is not None:
            return {"low": {"value": low, **simple}, "high": {"value": high, **simple},
                    "text": text}
    m = _BOUND.fullmatch(text)
    if m:
        number = dt.decimal(m["num"])
        side = "high" if m["op"].startswith("<") else "low"
        if number is not None:
            return {side: {"value": number, **simple}, "text": text}
    return {"text": text}


def _interpretation(rep: Repetition) -> JSON:
    flag = component(rep, 1)
    if flag in tables.INTERPRETATION:
        return {"coding": [{"system": tables.V3_INTERPRETATION,
                            "code": tables.INTERPRETATION_V3_CODE.get(flag, flag),
                            "display": tables.INTERPRETATION[flag]}]}
    return {"text": component(rep, 2) or flag}
