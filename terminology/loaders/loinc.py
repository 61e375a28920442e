"""LOINC from its release files (the CSV distribution, Loinc_<version>.zip unpacked).

Loinc.csv (LoincTable/) has one row per LOINC term. Its display is LONG_COMMON_NAME, as
in LOINC's own FHIR CodeSystem (https://loinc.org/fhir/); the six-part fully specified
name and SHORTNAME become designations; the part axes, CLASS, CLASSTYPE, STATUS,
ORDER_OBS and EXAMPLE_UCUM_UNITS become properties under the same codes as LOINC's
CodeSystem. A DEPRECATED term is inactive; DISCOURAGED and TRIAL terms stay active with
their STATUS.

Translations come from AccessoryFiles/LinguisticVariants/: LinguisticVariants.csv lists
the variants (ID, ISO_LANGUAGE, ISO_COUNTRY) and each `<lang><COUNTRY><ID>LinguisticVariant.csv`
holds LONG_COMMON_NAME (or LinguisticVariantDisplayName) per LOINC_NUM. The variants
asked for are read into memory first (one display per term and language: about 10 MB
per language for the full table); Loinc.csv itself is streamed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from terminology.loaders.base import FSN, SCT, SYNONYM, LoadError, Loaded, csv_rows
from terminology.model import CodeSystemHeader, Concept, Designation

URL = "http://loinc.org"
COPYRIGHT = (
    "This material contains content from LOINC (http://loinc.org). LOINC is copyright "
    "Regenstrief Institute, Inc. and the Logical Observation Identifiers Names and Codes "
    "(LOINC) Committee and is available at no cost under the license at "
    "http://loinc.org/license. LOINC is a registered United States trademark of "
    "Regenstrief Institute, Inc."
)
REQUIRED = ("LOINC_NUM", "COMPONENT", "PROPERTY", "TIME_ASPCT", "SYSTEM", "SCALE_TYP",
            "METHOD_TYP", "CLASS", "LONG_COMMON_NAME", "STATUS")
# Loinc.csv column -> CodeSystem property code (the same names LOINC's CodeSystem uses)
PROPERTIES = ("COMPONENT", "PROPERTY", "TIME_ASPCT", "SYSTEM", "SCALE_TYP", "METHOD_TYP",
              "CLASS", "CLASSTYPE", "STATUS", "ORDER_OBS", "EXAMPLE_UCUM_UNITS",
              "VersionFirstReleased", "VersionLastChanged")
_CLASSTYPES = {"1": "Laboratory class", "2": "Clinical class",
               "3": "Claims attachments", "4": "Surveys"}
_CODE = re.compile(r"\d{1,7}-\d")
_STATUSES = {"ACTIVE", "TRIAL", "DISCOURAGED", "DEPRECATED"}


def check_digit_ok(code: str) -> bool:
    """A LOINC code's last digit is its mod-10 check digit (LOINC Users' Guide,
    appendix: the same Luhn-style algorithm as for credit cards)."""
    if not _CODE.fullmatch(code):
        return False
    digits, check = code.split("-")
    total = 0
    # from the right, every other digit starting with the rightmost is doubled
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            value = value - 9 if value > 9 else value
        total += value
    return (10 - total % 10) % 10 == int(check)


def find_table(path: Path) -> Path:
    """Loinc.csv itself, or found under a release folder (LoincTable/Loinc.csv)."""
    if path.is_file():
        return path
    for candidate in (path / "LoincTable" / "Loinc.csv", path / "Loinc.csv"):
        if candidate.is_file():
            return candidate
    found = sorted(path.glob("**/Loinc.csv")) if path.is_dir() else []
    if not found:
        raise LoadError(path, "no Loinc.csv here (give the file or the unpacked release folder)")
    return found[0]


def load_loinc(path: Path, *, version: str | None = None, url: str | None = None,
               languages: tuple[str, ...] = (), variants: Path | None = None) -> Loaded:
    """LOINC from Loinc.csv (or the release folder holding it). `languages` are the
    linguistic variants to add as designations, as BCP 47 tags ("zh-CN", "de-DE");
    `variants` is the LinguisticVariants folder when not in the release's usual place."""
    table = find_table(path)
    translations = {}
    if languages:
        folder = variants or _variants_folder(path, table)
        translations = {lang: _variant_displays(folder, lang) for lang in languages}
    header = CodeSystemHeader(
        url=url or URL, version=version, name="LOINC",
        title="Logical Observation Identifiers Names and Codes (LOINC)",
        content="complete", copyright=COPYRIGHT, language="en",
    )
    return Loaded(header, _concepts(table, translations))


def _concepts(table: Path, translations: dict[str, dict[str, str]]) -> Iterator[Concept]:
    for line, row in csv_rows(table, REQUIRED):
        code = row["LOINC_NUM"].strip()
        if not _CODE.fullmatch(code):
            raise LoadError(table, f"LOINC_NUM {code!r} is not a LOINC code", line)
        status = row["STATUS"].strip().upper()
        if status and status not in _STATUSES:
            raise LoadError(table, f"STATUS {status!r} is not a LOINC status", line)
        display = row["LONG_COMMON_NAME"].strip() or None
        designations = []
        if display:
            designations.append(Designation(display, "en", SCT, SYNONYM))
        axes = [row[name].strip() for name in REQUIRED[1:7]]
        fully_specified = ":".join(axes).rstrip(":")
        if fully_specified:
            designations.append(Designation(fully_specified, "en", SCT, FSN))
        short = (row.get("SHORTNAME") or "").strip()
        if short:
            designations.append(Designation(short, "en", SCT, SYNONYM))
        for lang, displays in translations.items():
            text = displays.get(code)
            if text:
                designations.append(Designation(text, lang, SCT, SYNONYM))
        properties: dict[str, tuple[object, ...]] = {}
        for name in PROPERTIES:
            value = (row.get(name) or "").strip()
            if not value:
                continue
            if name == "CLASSTYPE":
                value = _CLASSTYPES.get(value, value)
            properties[name] = (value,)
        yield Concept(code=code, display=display, designations=tuple(designations),
                      properties=properties, active=status != "DEPRECATED")


def _variants_folder(path: Path, table: Path) -> Path:
    for root in (path if path.is_dir() else table.parent, table.parent.parent):
        folder = root / "AccessoryFiles" / "LinguisticVariants"
        if folder.is_dir():
            return folder
    raise LoadError(path, "no AccessoryFiles/LinguisticVariants folder for the languages asked")


def _variant_displays(folder: Path, lang: str) -> dict[str, str]:
    """LOINC_NUM -> translated long common name for one BCP 47 language tag."""
    index = folder / "LinguisticVariants.csv"
    language, _, country = lang.partition("-")
    wanted = None
    for _, row in csv_rows(index, ("ID", "ISO_LANGUAGE", "ISO_COUNTRY")):
        if (row["ISO_LANGUAGE"].lower() == language.lower()
                and (not country or row["ISO_COUNTRY"].upper() == country.upper())):
            wanted = f"{row['ISO_LANGUAGE']}{row['ISO_COUNTRY']}{row['ID']}LinguisticVariant.csv"
            break
    if wanted is None:
        raise LoadError(index, f"no linguistic variant for language {lang}")
    file = folder / wanted
    displays: dict[str, str] = {}
    for line, row in csv_rows(file, ("LOINC_NUM",)):
        text = (row.get("LinguisticVariantDisplayName") or row.get("LONG_COMMON_NAME")
                or row.get("COMPONENT") or "").strip()
        if text:
            displays[row["LOINC_NUM"].strip()] = text
    return displays
