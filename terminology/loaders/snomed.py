"""SNOMED CT from an RF2 snapshot release (the unpacked SnomedCT_*_<date> folder).

Files used (found anywhere under the folder given):
- sct2_Concept_Snapshot*.txt: id, effectiveTime, active, moduleId, definitionStatusId
- sct2_Description_Snapshot-<lang>*.txt: id, ..., conceptId, languageCode, typeId, term
  (typeId 900000000000003001 fully specified name, 900000000000013009 synonym)
- sct2_Relationship_Snapshot*.txt: active is-a rows (typeId 116680003) give the parents
- der2_cRefset_LanguageSnapshot-<lang>*.txt (optional): acceptabilityId
  900000000000548007 marks the preferred term of a language (RF2 guide, section 5.2.3)

The files are tab-separated UTF-8 with a header line (RF2 guide, chapter 3). A concept
needs its descriptions and parents, which sit in other files of several million rows;
they are joined through a temporary SQLite file so memory stays small whatever the
release size. The version is the SNOMED CT URI
http://snomed.info/sct/<edition module>/version/<effectiveTime> (FHIR's "Using SNOMED CT").
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from terminology.loaders.base import FSN, SCT, SYNONYM, LoadError, Loaded, csv_rows
from terminology.model import CodeSystemHeader, Concept, Designation

URL = SCT
IS_A = "116680003"
PREFERRED = "900000000000548007"
DEFINED = "900000000000073002"  # definitionStatusId: sufficiently defined
US_ENGLISH = "900000000000509007"
COPYRIGHT = (
    "This material includes SNOMED Clinical Terms (SNOMED CT) which is used by permission "
    "of SNOMED International. All rights reserved. SNOMED CT was originally created by "
    "the College of American Pathologists. Use requires a licence from SNOMED "
    "International or a Member's National Release Centre."
)
_CONCEPT_COLUMNS = ("id", "effectiveTime", "active", "moduleId", "definitionStatusId")
_DESCRIPTION_COLUMNS = ("id", "active", "conceptId", "languageCode", "typeId", "term")
_RELATIONSHIP_COLUMNS = ("active", "sourceId", "destinationId", "typeId")
_LANGUAGE_COLUMNS = ("active", "refsetId", "referencedComponentId", "acceptabilityId")


def _files(root: Path, pattern: str, *, required: bool) -> list[Path]:
    found = sorted(p for p in root.glob(f"**/{pattern}") if p.is_file())
    if required and not found:
        raise LoadError(root, f"no {pattern.replace('*', '…')} file under this folder "
                              "(give the unpacked RF2 release folder)")
    return found


def load_snomed(path: Path, *, version: str | None = None, url: str | None = None,
                work_dir: Path | None = None,
                progress: Callable[[str], object] | None = None) -> Loaded:
    """SNOMED CT from the snapshot files under `path`. The staging database goes in
    `work_dir` (default: the system's temporary folder) and is removed afterwards.
    Staging reads every file before the first concept; `progress` is told how far it
    got (a line of text every 500,000 rows and per file)."""
    if not path.is_dir():
        raise LoadError(path, "is not a folder (give the unpacked RF2 release folder)")
    concepts = _files(path, "sct2_Concept_Snapshot*.txt", required=True)
    descriptions = _files(path, "sct2_Description_Snapshot*.txt", required=True)
    relationships = _files(path, "sct2_Relationship_Snapshot*.txt", required=False)
    languages = _files(path, "der2_cRefset_LanguageSnapshot*.txt", required=False)

    stack = contextlib.ExitStack()
    folder = stack.enter_context(tempfile.TemporaryDirectory(dir=work_dir,
                                                            prefix="fhir-fusion-rf2-"))
    db = sqlite3.connect(Path(folder) / "rf2.db")
    stack.callback(db.close)
    try:
        module, effective = _stage(db, concepts, descriptions, relationships, languages,
                                   progress or (lambda text: None))
    except BaseException:
        stack.close()
        raise
    header = CodeSystemHeader(
        url=url or URL,
        version=version or f"{URL}/{module}/version/{effective}",
        name="SNOMED_CT", title="SNOMED CT", content="complete", hierarchy_meaning="is-a",
        copyright=COPYRIGHT, language="en",
    )
    return Loaded(header, _concepts(db, stack))


def _stage(db: sqlite3.Connection, concepts: list[Path], descriptions: list[Path],
           relationships: list[Path], languages: list[Path],
           progress: Callable[[str], object]) -> tuple[str, str]:
    """Copy what the join needs into `db`; return the edition module and its date."""
    db.executescript("""
        PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
        CREATE TABLE concept(id TEXT PRIMARY KEY, effective TEXT, active INT, module TEXT,
                             defined INT) WITHOUT ROWID;
        CREATE TABLE description(concept TEXT, id TEXT, lang TEXT, type TEXT, term TEXT);
        CREATE TABLE parent(concept TEXT, parent TEXT);
        CREATE TABLE preferred(id TEXT, refset TEXT);
    """)
    latest: Counter[tuple[str, str]] = Counter()
    for file in concepts:
        rows = []
        for line, row in _rf2_rows(file, _CONCEPT_COLUMNS, progress):
            _check_id(file, line, row["id"])
            rows.append((row["id"], row["effectiveTime"], _flag(file, line, row["active"]),
                         row["moduleId"], int(row["definitionStatusId"] == DEFINED)))
            latest[(row["effectiveTime"], row["moduleId"])] += 1
            if len(rows) >= 50_000:
                _insert(db, file, "INSERT OR REPLACE INTO concept VALUES (?,?,?,?,?)", rows)
        _insert(db, file, "INSERT OR REPLACE INTO concept VALUES (?,?,?,?,?)", rows)
    if not latest:
        raise LoadError(concepts[0], "has no concepts")
    for file in descriptions:
        rows = []
        for line, row in _rf2_rows(file, _DESCRIPTION_COLUMNS, progress):
            if _flag(file, line, row["active"]):
                rows.append((row["conceptId"], row["id"], row["languageCode"], row["typeId"],
                             row["term"]))
            if len(rows) >= 50_000:
                _insert(db, file, "INSERT INTO description VALUES (?,?,?,?,?)", rows)
        _insert(db, file, "INSERT INTO description VALUES (?,?,?,?,?)", rows)
    for file in relationships:
        rows = []
        for line, row in _rf2_rows(file, _RELATIONSHIP_COLUMNS, progress):
            if row["typeId"] == IS_A and _flag(file, line, row["active"]):
                rows.append((row["sourceId"], row["destinationId"]))
            if len(rows) >= 50_000:
                _insert(db, file, "INSERT INTO parent VALUES (?,?)", rows)
        _insert(db, file, "INSERT INTO parent VALUES (?,?)", rows)
    for file in languages:
        rows = []
        for line, row in _rf2_rows(file, _LANGUAGE_COLUMNS, progress):
            if row["acceptabilityId"] == PREFERRED and _flag(file, line, row["active"]):
                rows.append((row["referencedComponentId"], row["refsetId"]))
            if len(rows) >= 50_000:
                _insert(db, file, "INSERT INTO preferred VALUES (?,?)", rows)
        _insert(db, file, "INSERT INTO preferred VALUES (?,?)", rows)
    db.executescript("""
        CREATE INDEX description_concept ON description(concept);
        CREATE INDEX parent_concept ON parent(concept);
        CREATE INDEX preferred_id ON preferred(id);
    """)
    # the edition is the module most rows of the newest date belong to
    effective = max(date for date, _ in latest)
    module = max((n, mod) for (date, mod), n in latest.items() if date == effective)[1]
    return module, effective


def _insert(db: sqlite3.Connection, file: Path, sql: str, rows: list[tuple[object, ...]]) -> None:
    db.executemany(sql, rows)
    rows.clear()


def _rf2_rows(file: Path, columns: tuple[str, ...],
              progress: Callable[[str], object]) -> Iterator[tuple[int, dict[str, str]]]:
    """The rows of an RF2 file (tab-separated, header line), telling `progress`."""
    line = 0
    for line, row in csv_rows(file, columns, delimiter="\t", kind="RF2"):
        if line % 500_000 == 0:
            progress(f"staging {file.name}: {line:,} rows")
        yield line, row
    progress(f"staged {file.name}: {max(line - 1, 0):,} rows")


def _check_id(file: Path, line: int, sctid: str) -> None:
    if not (sctid.isdigit() and 6 <= len(sctid) <= 18):
        raise LoadError(file, f"id {sctid!r} is not a SNOMED CT identifier", line)


def _flag(file: Path, line: int, value: str) -> int:
    if value not in ("0", "1"):
        raise LoadError(file, f"active is {value!r}, not 0 or 1 (is the file tab-separated?)",
                        line)
    return int(value)


def _concepts(db: sqlite3.Connection, stack: contextlib.ExitStack) -> Iterator[Concept]:
    with stack:
        reader = db.cursor()
        lookup = db.cursor()
        for code, effective, active, module, defined in reader.execute(
                "SELECT id, effective, active, module, defined FROM concept ORDER BY id"):
            rows = lookup.execute(
                "SELECT d.lang, d.type, d.term, group_concat(p.refset) FROM description d "
                "LEFT JOIN preferred p ON p.id = d.id WHERE d.concept = ? "
                "GROUP BY d.id ORDER BY d.type, d.id", (code,)).fetchall()
            designations = []
            display = fsn = None
            for lang, kind, term, refsets in rows:
                use = FSN if kind == FSN else SYNONYM
                preferred = set((refsets or "").split(","))
                designations.append(Designation(term, lang, SCT, use))
                if kind == FSN and fsn is None:
                    fsn = term
                elif kind == SYNONYM and lang == "en" and preferred - {""}:
                    # the US English refset wins when a release has several
                    if display is None or US_ENGLISH in preferred:
                        display = term
            if display is None and fsn is not None:
                display = _without_tag(fsn, rows)
            parents = tuple(p for (p,) in lookup.execute(
                "SELECT DISTINCT parent FROM parent WHERE concept = ? ORDER BY parent", (code,)))
            yield Concept(
                code=code, display=display, designations=tuple(designations), parents=parents,
                properties={"moduleId": (module,), "effectiveTime": (effective,),
                            "sufficientlyDefined": (bool(defined),)},
                active=bool(active),
            )


def _without_tag(fsn: str, rows: list[tuple[str, str, str, str | None]]) -> str:
    """Without a language refset: the synonym equal to the FSN minus its semantic tag,
    else the FSN itself."""
    term = fsn.rsplit(" (", 1)[0] if fsn.endswith(")") else fsn
    for _, kind, text, _ in rows:
        if kind == SYNONYM and text == term:
            return text
    return fsn
