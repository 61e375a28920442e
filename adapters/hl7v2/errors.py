"""Errors found while reading or translating an HL7v2 message.

Each error carries what an ACK needs: the ACK code (AE for content errors, AR for
messages we refuse to process), the HL7 error code from table 0357 and the location
(segment, occurrence, field, component) for ERR-1/ERR-2. Messages never contain patient
data: they name segments and fields, not values.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.translation import TranslationError

# Table 0357, message error condition codes (HL7 v2.5 chapter 2, section 2.15.5).
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_PROCESSING_ID = "202"
UNSUPPORTED_VERSION_ID = "203"
DUPLICATE_KEY_IDENTIFIER = "205"
APPLICATION_INTERNAL_ERROR = "207"

ERROR_NAMES = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    DUPLICATE_KEY_IDENTIFIER: "Duplicate key identifier",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}


@dataclass(frozen=True)
class Location:
    """Where an error is (ERR-2, ERL data type): segment id, its 1-based occurrence among
    segments of that name, then field, component (0 = not given)."""

    segment: str = ""
    occurrence: int = 1
    field: int = 0
    component: int = 0

    def __str__(self) -> str:
        if not self.segment:
            return "message"
        text = self.segment if self.occurrence <= 1 else f"{self.segment}[{self.occurrence}]"
        if self.field:
            text += f"-{self.field}"
            if self.component:
                text += f".{self.component}"
        return text


@dataclass
class Hl7Error(TranslationError):
    """A message we cannot take, with the ACK code and ERR content to answer it with."""

    text: str
    code: str = APPLICATION_INTERNAL_ERROR
    location: Location = Location()
    ack_code: str = "AE"  # AE: content error; AR: we refuse this kind of message

    def __str__(self) -> str:
        where = str(self.location)
        return f"{where}: {self.text}" if self.location.segment else self.text


def rejected(text: str, code: str, location: Location = Location()) -> Hl7Error:
    """An AR error: the message is of a kind this receiver does not process."""
    return Hl7Error(text, code, location, ack_code="AR")


def warning_details(warning: Hl7Error) -> dict[str, object]:
    """A warning as JSON, kept in the input's result so that the ACK of the message (and
    of a resent copy) can name it again."""
    where = warning.location
    return {"text": warning.text, "code": warning.code, "segment": where.segment,
            "occurrence": where.occurrence, "field": where.field,
            "component": where.component}


def warnings_of(details: object) -> list[Hl7Error]:
    """The warnings `warning_details` kept in a translation's details."""
    found = details.get("warnings", []) if isinstance(details, dict) else []
    return [Hl7Error(str(w["text"]), str(w["code"]),
                     Location(str(w["segment"]), int(w["occurrence"]), int(w["field"]),
                              int(w["component"])))
            for w in found if isinstance(w, dict)]
