"""HL7 v2 tables and their FHIR targets.

hl7apy ships each version's tables, but only as lists of legal codes without display
text or FHIR equivalents, so the maps here are written out from the standard's tables
and the HL7 V2-to-FHIR IG concept maps. `structure.check_structure` uses hl7apy's lists
to flag codes that are not in a table at all.
"""

from __future__ import annotations

V2_TABLE = "http://terminology.hl7.org/CodeSystem/v2-{:04d}"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V3_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
V3_NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"

# Table 0001 administrative sex -> administrative-gender.
SEX = {"F": "female", "M": "male", "O": "other", "U": "unknown", "A": "other", "N": "other",
       "X": "other"}

# Table 0004 patient class -> v3 ActCode (encounter class).
PATIENT_CLASS = {
    "E": ("EMER", "emergency"),
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "P": ("PRENC", "pre-admission"),
    "R": ("IMP", "inpatient encounter"),  # recurring patient: seen as inpatient series
    "B": ("IMP", "inpatient encounter"),  # obstetrics
    "C": ("AMB", "ambulatory"),  # commercial account
    "N": ("AMB", "ambulatory"),  # not applicable: the IG maps to ambulatory
    "U": ("AMB", "ambulatory"),  # unknown: no better ActCode
}

# Table 0078 abnormal flags -> v3 ObservationInterpretation (same codes, most of them).
INTERPRETATION = {
    "L": "Low", "H": "High", "LL": "Critical low", "HH": "Critical high", "N": "Normal",
    "A": "Abnormal", "AA": "Critical abnormal", "<": "Off scale low", ">": "Off scale high",
    "U": "Significant change up", "D": "Significant change down", "B": "Better",
    "W": "Worse", "S": "Susceptible", "R": "Resistant", "I": "Intermediate",
    "MS": "moderately susceptible", "VS": "very susceptible", "POS": "Positive",
    "NEG": "Negative", "IND": "Indeterminate", "DET": "Detected", "ND": "Not detected",
    "LU": "Significantly low", "HU": "Significantly high", "NR": "Non-reactive",
    "RR": "Reactive", "QCF": "Quality control failure", "TOX": "Cytotoxic substance present",
    "E": "Equivocal", "EX": "outside threshold", "EXP": "Expected", "UNE": "Unexpected",
    "IE": "Insufficient evidence", "SYN-R": "Synergy - resistant", "SYN-S": "Synergy - susceptible",
    "NCL": "No CLSI defined breakpoint", "H>": "Significantly high", "L<": "Significantly low",
    "WR": "Weakly reactive", "CAR": "Carrier",
}
# Flags whose v3 code differs from the v2 one.
INTERPRETATION_V3_CODE = {"H>": "HU", "L<": "LU"}

# Table 0085 observation result status -> Observation.status.
OBSERVATION_STATUS = {
    "C": "corrected", "D": "entered-in-error", "F": "final", "I": "registered",
    "N": "cancelled", "O": "registered", "P": "preliminary", "R": "preliminary",
    "S": "preliminary", "U": "final", "W": "entered-in-error", "X": "cancelled",
    "A": "amended",
}

# Table 0123 result status (OBR-25) -> DiagnosticReport.status.
REPORT_STATUS = {
    "O": "registered", "I": "registered", "S": "registered", "A": "partial",
    "P": "preliminary", "C": "corrected", "R": "partial", "F": "final", "X": "cancelled",
    "Y": "registered", "Z": "registered",
}

# Table 0002 marital status -> v3 MaritalStatus (codes the v3 system shares).
MARITAL = {
    "A": ("L", "Legally Separated"), "D": ("D", "Divorced"), "M": ("M", "Married"),
    "S": ("S", "Never Married"), "W": ("W", "Widowed"), "C": ("C", "Common Law"),
    "P": ("T", "Domestic partner"), "I": ("I", "Interlocutory"), "U": ("UNK", "unknown"),
    "B": ("U", "unmarried"), "T": ("T", "Domestic partner"), "G": ("T", "Domestic partner"),
    "E": ("L", "Legally Separated"), "N": ("C", "Common Law"), "R": ("T", "Domestic partner"),
    "O": ("UNK", "unknown"),
}

# XPN-7 name type (table 0200) -> HumanName.use.
NAME_USE = {
    "L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous",
    "S": "anonymous", "B": "official", "C": "official", "R": "official", "U": "temp",
    "T": "temp", "P": "official", "I": "official", "BAD": "old", "NB": "old", "TEMP": "temp",
}

# XTN-2 telecom use (table 0201) -> ContactPoint.use; XTN-3 equipment (table 0202) -> system.
TELECOM_USE = {"PRN": "home", "ORN": "home", "WPN": "work", "VHN": "home", "ASN": "work",
               "EMR": "temp", "NET": "home", "BPN": "work", "PRS": "mobile"}
TELECOM_SYSTEM = {"PH": "phone", "FX": "fax", "MD": "other", "CP": "phone", "BP": "pager",
                  "Internet": "email", "X.400": "email", "TDD": "other", "TTY": "other",
                  "SAT": "phone"}

# XAD-7 address type (table 0190) -> Address.use / Address.type.
ADDRESS_USE = {"H": "home", "B": "work", "C": "temp", "O": "work", "BA": "old", "BDL": "old",
               "BR": "billing", "TEMP": "temp"}
ADDRESS_TYPE = {"M": "postal", "SH": "physical", "P": "physical", "BDL": "both"}

# Coding-system names seen in CE/CWE components 3 and 6 -> FHIR system URIs.
CODING_SYSTEMS = {
    "LN": LOINC,
    "LOINC": LOINC,
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct",
    "UCUM": UCUM,
    "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "C4": "http://www.ama-assn.org/go/cpt",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238",
}

# Assigning authorities with well-known FHIR identifier systems.
KNOWN_AUTHORITIES = {
    "USSSA": "http://hl7.org/fhir/sid/us-ssn",
    "SSA": "http://hl7.org/fhir/sid/us-ssn",
    "NPI": "http://hl7.org/fhir/sid/us-npi",
    "CMS": "http://hl7.org/fhir/sid/us-npi",
}

# Message types and events translated here (section "Messages" in docs/hl7v2-mapping.md).
ADT_EVENTS = {"A01", "A02", "A03", "A04", "A05", "A08", "A11", "A13", "A28", "A31", "A40"}

# Encounter.status by ADT event; events that do not change the visit leave it out
# (then the status comes from PV1-45: finished when a discharge time is given).
ENCOUNTER_STATUS = {
    "A01": "in-progress",
    "A02": "in-progress",
    "A03": "finished",
    "A04": "arrived",
    "A05": "planned",
    "A11": "cancelled",
    "A13": "in-progress",
}


def coding_system(name: str) -> str | None:
    """The FHIR system for a v2 coding-system name: known names, HL7 tables ("HL70078"
    or "HL7nnnn"), OIDs; None for local names (the caller decides)."""
    if not name:
        return None
    known = CODING_SYSTEMS.get(name) or CODING_SYSTEMS.get(name.upper())
    if known:
        return known
    if name.upper().startswith("HL7") and name[3:].isdigit() and len(name) in (7, 8):
        return V2_TABLE.format(int(name[3:]))
    if _is_oid(name):
        return f"urn:oid:{name}"
    return None


def _is_oid(text: str) -> bool:
    parts = text.split(".")
    return len(parts) > 2 and all(p.isdigit() for p in parts)
