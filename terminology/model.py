"""The neutral form of terminology content, between the loaders (LOINC, SNOMED CT RF2,
ClaML, CSV/Excel code lists, the shipped FHIR content) and the terminology store.

A loader yields a `CodeSystemHeader` and then `Concept`s; the store keeps them in
tables of its own (a code system of 350,000 concepts is not one FHIR resource to
parse on every lookup) and answers $lookup, $validate-code, $expand and $subsumes
from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Designation:
    value: str
    language: str | None = None  # BCP 47, e.g. "en", "zh-CN"
    use_system: str | None = None  # Coding of the designation use, e.g. SNOMED CT
    use_code: str | None = None  # 900000000000013009 (synonym)


@dataclass(frozen=True)
class Concept:
    code: str
    display: str | None = None
    definition: str | None = None
    designations: tuple[Designation, ...] = ()
    parents: tuple[str, ...] = ()  # codes of the direct parents (is-a), if hierarchical
    # CodeSystem.concept.property: code -> values (str, int, bool, Decimal, or Coding
    # written as "system|code")
    properties: dict[str, tuple[object, ...]] = field(default_factory=dict)
    active: bool = True


@dataclass(frozen=True)
class CodeSystemHeader:
    url: str
    version: str | None
    name: str
    title: str | None = None
    status: str = "active"  # publication status of the CodeSystem resource
    content: str = "complete"  # complete | fragment (e.g. a curated LOINC subset)
    hierarchy_meaning: str | None = None  # "is-a" when parents are subsumption
    copyright: str | None = None  # the licence notice the content requires
    language: str | None = None
