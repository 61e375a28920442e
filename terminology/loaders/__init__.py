"""Parsers for terminology release files the operator licenses and loads themselves:
LOINC (CSV), SNOMED CT (RF2 snapshot), ICD-10 and ICD-11 (ClaML), and local or
national code lists (CSV or Excel).

Each loader reads its files as a stream and returns a `Loaded`: the `CodeSystemHeader`
and an iterator of `Concept`s (terminology/model.py), ready for the store's
`load_code_system`. Nothing is held in memory beyond what a join needs (SNOMED CT joins
through a temporary SQLite file). A file that is not what it should be raises
`LoadError`, naming the file and the line.
"""

from __future__ import annotations

from terminology.loaders.base import LoadError, Loaded

__all__ = ["KINDS", "LoadError", "Loaded"]

# KIND on the command line -> the module:function that loads it
KINDS = {
    "loinc": "terminology.loaders.loinc:load_loinc",
    "snomed": "terminology.loaders.snomed:load_snomed",
    "icd10-claml": "terminology.loaders.claml:load_icd10",
    "icd11-claml": "terminology.loaders.claml:load_icd11",
    "codelist": "terminology.loaders.codelist:load_codelist",
}
