"""ICD-10 and ICD-11 (and national editions such as ICD-10-GM) from ClaML, the XML
format of ISO 13120 in which WHO publishes its classifications.

A `Class` (code, kind chapter|block|category) names its parents in `SuperClass` and its
text in `Rubric`s: kind "preferred" is the display, "preferredLong" and "inclusion" are
further designations, "definition" the definition; a `Label`'s xml:lang gives the
language (so a bilingual edition gives designations in both). The file is read with
iterparse and each Class is cleared once read, so memory stays flat however large the
classification.

Not read: Modifier/ModifierClass (the fifth and sixth characters some chapters add
through ModifiedBy), exclusion and note rubrics.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from terminology.loaders.base import SCT, SYNONYM, LoadError, Loaded, is_fhir_code
from terminology.model import CodeSystemHeader, Concept, Designation

ICD10_URL = "http://hl7.org/fhir/sid/icd-10"
ICD11_URL = "http://id.who.int/icd/release/11/mms"
# Rubric kinds other than "preferred" are ClaML's own; they are designation uses here
RUBRIC_KIND = "http://fhir-fusion.org/CodeSystem/claml-rubric-kind"
ICD_COPYRIGHT = (
    "The International Classification of Diseases is copyright World Health Organization "
    "(WHO); use it under the licence of the edition loaded (WHO or the national release "
    "centre)."
)
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_DESIGNATION_RUBRICS = {"preferredLong", "inclusion"}


def load_icd10(path: Path, *, version: str | None = None, url: str | None = None) -> Loaded:
    """ICD-10 (WHO or a national edition, with `url` naming that edition) from ClaML."""
    return load_claml(path, default_url=ICD10_URL, name="ICD10", version=version, url=url)


def load_icd11(path: Path, *, version: str | None = None, url: str | None = None) -> Loaded:
    """ICD-11 MMS from its ClaML export."""
    return load_claml(path, default_url=ICD11_URL, name="ICD11MMS", version=version, url=url)


def load_claml(path: Path, *, default_url: str, name: str, version: str | None,
               url: str | None) -> Loaded:
    if not path.is_file():
        raise LoadError(path, "is not a file (give the ClaML .xml file)")
    children = _top_level(path)
    title_text, title_version, title_lang = None, None, None
    first_class: ET.Element | None = None
    for elem in children:
        tag = _local(elem.tag)
        if tag == "Title":
            title_text = "".join(elem.itertext()).strip() or None
            title_version = elem.get("version")
            title_lang = elem.get(_XML_LANG)
        elif tag == "Class":
            first_class = elem
            break
    if first_class is None:
        raise LoadError(path, "has no Class element: not a ClaML classification")
    header = CodeSystemHeader(
        url=url or default_url, version=version or title_version, name=name, title=title_text,
        content="complete", hierarchy_meaning="is-a", copyright=ICD_COPYRIGHT,
        language=title_lang,
    )
    return Loaded(header, _concepts(path, first_class, children, title_lang))


def _top_level(path: Path) -> Iterator[ET.Element]:
    """The children of the ClaML root, each complete when yielded and removed from the
    tree when the consumer asks for the next: however large the file, the tree holds one
    Class (the parser reads ahead 16 kB, so the one read is not always the last child)."""
    depth = 0
    root: ET.Element | None = None
    try:
        for event, elem in ET.iterparse(path, events=("start", "end")):
            if event == "start":
                depth += 1
                if root is None:
                    root = elem
                    if _local(elem.tag) != "ClaML":
                        raise LoadError(path, f"the root element is {_local(elem.tag)}, "
                                              "not ClaML")
                continue
            depth -= 1
            if depth == 1 and root is not None:
                yield elem
                elem.clear()
                root.remove(elem)  # earlier children are gone: it is at the front
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else None
        raise LoadError(path, f"is not well-formed XML ({exc})", line) from None
    except OSError as exc:
        raise LoadError(path, f"cannot read: {exc.strerror or exc}") from None


def _concepts(path: Path, first: ET.Element, children: Iterator[ET.Element],
              default_lang: str | None) -> Iterator[Concept]:
    yield _concept(path, first, default_lang)
    for elem in children:
        if _local(elem.tag) == "Class":
            yield _concept(path, elem, default_lang)


def _concept(path: Path, elem: ET.Element, default_lang: str | None) -> Concept:
    code = (elem.get("code") or "").strip()
    if not code:
        raise LoadError(path, "a Class has no code attribute")
    if not is_fhir_code(code):
        raise LoadError(path, f"Class code {code!r} is not a FHIR code (inner whitespace)")
    kind = elem.get("kind") or ""
    parents = tuple(sup.get("code", "") for sup in elem if _local(sup.tag) == "SuperClass"
                    and sup.get("code"))
    display = definition = None
    designations: list[Designation] = []
    for rubric in (r for r in elem if _local(r.tag) == "Rubric"):
        rubric_kind = rubric.get("kind") or ""
        for label in (lab for lab in rubric if _local(lab.tag) == "Label"):
            text = " ".join("".join(label.itertext()).split())
            if not text:
                continue
            lang = label.get(_XML_LANG) or default_lang
            if rubric_kind == "preferred":
                if display is None and (lang == default_lang or default_lang is None):
                    display = text
                designations.append(Designation(text, lang, SCT, SYNONYM))
            elif rubric_kind in _DESIGNATION_RUBRICS:
                designations.append(Designation(text, lang, RUBRIC_KIND, rubric_kind))
            elif rubric_kind == "definition" and definition is None:
                definition = text
    if display is None and designations:
        display = designations[0].value
    properties: dict[str, tuple[object, ...]] = {"kind": (kind,)} if kind else {}
    return Concept(code=code, display=display, definition=definition,
                   designations=tuple(designations), parents=parents, properties=properties)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
