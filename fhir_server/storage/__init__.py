"""Resource storage behind one interface (see base.py)."""

from fhir_server.storage.base import (
    Context,
    RawInput,
    ResourceStore,
    SearchPage,
    StoredResource,
    Transaction,
    WriteResult,
)

__all__ = [
    "Context",
    "RawInput",
    "ResourceStore",
    "SearchPage",
    "StoredResource",
    "Transaction",
    "WriteResult",
]
