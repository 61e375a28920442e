"""Reading a CSV file as records with the line each starts on.

The bytes are decoded with the encoding given, or else: a UTF-8 byte order mark, then
strict UTF-8, then, for a file with enough non-ASCII text to tell (MIN_NON_ASCII_TO_DETECT
bytes), the best guess of charset-normalizer among GB18030 (which covers GBK), EUC-KR,
Big5, Shift-JIS and the Western single-byte encodings (Windows-1252, Latin-1); a shorter
non-UTF-8 file is refused, asking for its encoding, rather than stored garbled. The delimiter is
given or sniffed from the header line. Quoted fields may hold delimiters, quotes ("")
and line breaks, so a record may span several physical lines: its line number is the
one it starts on (the header is line 1), which is what an editor shows.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from adapters.translation import TranslationError

SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
# GB18030 covers GBK; cp1252 covers Latin-1 text. EUC-KR, Big5 and Shift-JIS are candidates
# so that Korean, Taiwanese or Japanese text is not taken for GB18030 Chinese.
DETECTED = ("gb18030", "euc_kr", "big5", "shift_jis", "cp1252", "latin_1")
# Non-ASCII bytes below which a non-UTF-8 file's encoding is not guessed (measured: one-row
# files of 3-8 such bytes were misread; 100+ bytes of names read right in every case tried).
MIN_NON_ASCII_TO_DETECT = 100


class CsvFormatError(TranslationError):
    """The file as a whole cannot be read (encoding, no header, ...)."""


@dataclass(frozen=True)
class Record:
    line: int  # the physical line the record starts on; the header is line 1
    cells: list[str]
    end: int = 0  # the physical line it ends on, when past `line` (a quoted line break)


@dataclass(frozen=True)
class CsvText:
    text: str
    encoding: str  # as detected or given
    delimiter: str


def decode(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """The text of `data` and the name of the encoding it was read with."""
    if encoding:
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            raise CsvFormatError(f"unknown encoding {encoding!r}") from None
        if codec == "utf-8" and data.startswith(codecs.BOM_UTF8):
            codec = "utf-8-sig"
        try:
            return data.decode(codec), codec
        except UnicodeDecodeError as exc:
            raise CsvFormatError(f"the file is not valid {encoding} (byte {exc.start})") from None
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8):].decode("utf-8", errors="strict"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    # Not UTF-8 and no encoding given. A few non-ASCII bytes fit several encodings
    # equally well (one-row GB18030 files read as Windows-1252, Korean as Chinese, "Ñúñez"
    # as Chinese: break-feeds F25), and a wrong guess stores wrong names without a word:
    # only a file with enough non-ASCII text to tell them apart is detected.
    non_ascii = sum(1 for byte in data if byte > 0x7F)
    if non_ascii < MIN_NON_ASCII_TO_DETECT:
        raise CsvFormatError(f"the file is not UTF-8 and has too little non-ASCII text "
                             f"({non_ascii} bytes) to recognise its encoding safely; give it "
                             f"(--encoding, or encoding= / charset= over HTTP), e.g. "
                             f"gb18030, euc-kr, cp1252")
    from charset_normalizer import from_bytes

    # Only the encodings hospital exports use besides UTF-8: left free, the detector
    # takes German or French text for Cyrillic or Central European code pages.
    best = from_bytes(data, cp_isolation=list(DETECTED)).best()
    if best is None:
        raise CsvFormatError("the encoding of the file could not be recognised; "
                             "give it (--encoding, or encoding= / charset= over HTTP)")
    return str(best), best.encoding


def sniff_delimiter(text: str) -> str:
    """The delimiter of the header line: the candidate it holds most of (a header
    rarely quotes a delimiter), else csv.Sniffer over the start of the file."""
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    if counts[best]:
        return best
    try:
        return csv.Sniffer().sniff(text[:SNIFF_BYTES], delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","  # one column: any delimiter reads it


def open_text(data: bytes, encoding: str | None = None,
              delimiter: str | None = None) -> CsvText:
    text, used = decode(data, encoding)
    if delimiter is not None and len(delimiter) != 1:
        raise CsvFormatError("the delimiter must be one character")
    return CsvText(text, used, delimiter or sniff_delimiter(text))


def records(source: CsvText) -> tuple[list[str], Iterator[Record]]:
    """The header (names stripped) and the data records that follow it. Blank lines
    are skipped."""
    reader = csv.reader(io.StringIO(source.text, newline=""), delimiter=source.delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise CsvFormatError("the file is empty (no header line)") from None
    except csv.Error as exc:
        raise CsvFormatError(f"line 1: {exc}") from None
    names = [name.strip() for name in header]
    if not any(names):
        raise CsvFormatError("line 1: the header names no columns")
    return names, _data(reader)


def _data(reader: Any) -> Iterator[Record]:
    """`reader` is a csv.reader; its line_num is the physical line it has read to."""
    end = reader.line_num  # the header's last line
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CsvFormatError(f"line {end + 1}: {exc}") from None
        start, end = end + 1, reader.line_num
        if cells and any(cell.strip() for cell in cells):
            yield Record(start, cells, end if end > start else 0)
