"""PyMongo errors as FHIR errors, at the store boundary.

The database going away (no server selectable, a connection reset, a network
timeout) is a 503 the client may retry: the driver reconnects by itself once the
server is back, so the store needs no restart. A write conflict between two
transactions is a 409 the client may retry. Messages name MongoDB, never data.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from fhir_server.errors import FHIRError

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

WRITE_CONFLICT = 112


def unavailable(detail: str) -> FHIRError:
    return FHIRError.simple(
        503, "transient",
        f"The MongoDB database is unavailable ({detail}); nothing was written by a request "
        "that failed this way unless it was acknowledged. Retry later.",
    )


def replica_set_required(what: str) -> FHIRError:
    return FHIRError.simple(
        501, "not-supported",
        f"{what} needs MongoDB multi-document transactions, which a standalone MongoDB "
        "server does not offer; run MongoDB as a replica set (a single-node replica set "
        "is enough: mongod --replSet rs0, then rs.initiate()).",
    )


def as_fhir_error(exc: PyMongoError) -> FHIRError:
    """The FHIRError a PyMongo error means for the client."""
    if isinstance(exc, ConnectionFailure):  # includes AutoReconnect, NetworkTimeout,
        return unavailable(type(exc).__name__)  # ServerSelectionTimeoutError
    if isinstance(exc, DuplicateKeyError):
        return FHIRError.simple(
            409, "conflict",
            "A concurrent request stored the same key in MongoDB first; retry the request",
        )
    if exc.has_error_label("TransientTransactionError") or (
        isinstance(exc, OperationFailure) and exc.code == WRITE_CONFLICT
    ):
        return FHIRError.simple(
            409, "conflict",
            "A concurrent MongoDB transaction changed the same resource; nothing of this "
            "request was written; retry it",
        )
    if exc.has_error_label("UnknownTransactionCommitResult"):
        return unavailable("the outcome of the commit is unknown")
    log.error("MongoDB error %s (code %s)", type(exc).__name__, getattr(exc, "code", None))
    return FHIRError.simple(500, "exception", f"MongoDB error {type(exc).__name__}")


def mapped(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run `func`, turning PyMongo errors into FHIR errors."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except PyMongoError as exc:
            raise as_fhir_error(exc) from exc

    return wrapper
