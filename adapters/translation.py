"""What every feed translator returns to the pipeline, and how it says no.

A translator is a function from the raw bytes of one input to a `Translation`: a FHIR
transaction Bundle plus a description of where the input came from, used for the
Provenance the pipeline adds. It raises `TranslationError` (or a subclass carrying
feed-specific detail, such as `Hl7Error` for HL7v2) when the input cannot be taken.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from fhir_server.storage.base import Context, ResourceStore


@dataclass(frozen=True)
class Source:
    """Where an input came from, for Provenance.entity and Provenance.agent.

    `message_id` and `message_system` identify the input as its sender names it (for
    HL7v2: MSH-10, scoped by the sending application); `sender` is the sending
    application/facility as display text; `sender_ref` the fullUrl of the sender's
    Organization or Device entry in the bundle, when there is one."""

    kind: str  # e.g. "HL7v2 ORU^R01"
    message_id: str = ""
    message_system: str = ""
    sender: str = ""
    sender_ref: str | None = None
    occurred: str | None = None  # FHIR dateTime the input was created by its sender


@dataclass
class Translation:
    bundle: dict[str, Any]
    source: Source
    details: dict[str, Any] = field(default_factory=dict)


class TranslationError(Exception):
    """An input that cannot be translated. `str(error)` is the rejection reason kept with
    the input; it names the bad element, never patient data."""


Translator = Callable[[bytes], Translation]


@dataclass(frozen=True)
class StoreTranslator:
    """A translator that reads the store while it translates: the CSV feed looks up
    ConceptMaps there. The pipeline awaits it with its store and the caller's context."""

    translate: Callable[[ResourceStore, Context, bytes], Awaitable[Translation]]


AnyTranslator = Union[Translator, StoreTranslator]


def describe_failure(exc: BaseException) -> str:
    """An unexpected exception for the log: its type and where it was raised, never its
    message, which may quote the input (and so patient data)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    return f"{type(exc).__name__}{where}"
