"""PyMongo errors as FHIR errors, at the store boundary.

The database going away (no server selectable, a connection reset, a network
timeout) is a 503 the client may retry: the driver reconnects by itself once the
server is back, so the store needs no restart. A write conflict between two
transactions is a 409 the client may retry. Messages name MongoDB, never data.

"Unavailable" also covers what the *server* answers as a command error when a part of
the cluster is away (a shard without a primary, mongos losing a host: plain
OperationFailure codes, `UNAVAILABLE_CODES`), a write concern not satisfied in time
(64: the write may have been applied), and the client-side operation timeout
(`timeoutMS`, every PyMongo timeout error has `exc.timeout`). A document over
MongoDB's 16 MiB limit is refused by the driver with `bson.errors.InvalidDocument`
(`DocumentTooLarge`), which is not a PyMongoError: a 413 naming the limit.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from bson.errors import InvalidDocument
from pymongo.errors import (
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from fhir_server.errors import FHIRError
from fhir_server.storage.retry import RetryableConflict

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

WRITE_CONFLICT = 112
WRITE_CONCERN_FAILED = 64

# MongoDB's largest BSON document (maxBsonObjectSize, "Limits and Thresholds")
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

# server error codes meaning "part of the cluster is away or too slow, retry later":
# PyMongo's retryable set (copied, as its module is private: HostUnreachable 6,
# HostNotFound 7, NetworkTimeout 89, ShutdownInProgress 91, ReadConcernMajority-
# NotAvailableYet 134, PrimarySteppedDown 189, ExceededTimeLimit 262, SocketException
# 9001, the NotPrimary family 10058/10107/11600/11602/13435/13436), plus
# MaxTimeMSExpired 50, WriteConcernFailed 64, FailedToSatisfyReadPreference 133
# (a shard without a primary) and LockTimeout 24 outside a transaction
UNAVAILABLE_CODES = frozenset({
    6, 7, 89, 91, 134, 189, 262, 9001, 10058, 10107, 11600, 11602, 13435, 13436,
    24, 50, 64, 133,
})  # fmt: skip


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


def too_large(what: str = "A document") -> FHIRError:
    return FHIRError.simple(
        413, "too-costly",
        f"{what} is larger than MongoDB stores in one document "
        f"({MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB, the BSON document limit); "
        "nothing was written",
    )


def _server_unavailable(exc: PyMongoError) -> str | None:
    """Why `exc` means the cluster (or part of it) is away, or None."""
    if isinstance(exc, ConnectionFailure):  # includes AutoReconnect, NetworkTimeout,
        return type(exc).__name__  # ServerSelectionTimeoutError, NotPrimaryError
    code = getattr(exc, "code", None)
    if exc.timeout:  # timeoutMS (client-side operation timeout) or a server time limit
        named = f"{type(exc).__name__}" + (f" code {code}" if code is not None else "")
        return f"{named}: no answer within the time limit"
    if exc.has_error_label("RetryableWriteError"):
        return f"{type(exc).__name__}, retryable"
    if isinstance(exc, OperationFailure) and exc.code in UNAVAILABLE_CODES:
        return f"{type(exc).__name__} code {exc.code}"
    return None


def as_fhir_error(exc: PyMongoError | InvalidDocument) -> FHIRError:
    """The FHIRError a PyMongo (or BSON encoding) error means for the client."""
    if isinstance(exc, InvalidDocument):  # DocumentTooLarge included; not a PyMongoError
        if isinstance(exc, DocumentTooLarge) or "too large" in str(exc).lower():
            return too_large()
        log.error("MongoDB refused a document: %s", type(exc).__name__)
        return FHIRError.simple(500, "exception", "MongoDB refused a document (BSON encoding)")
    if isinstance(exc, OperationFailure) and exc.code == 10334:  # BSONObjectTooLarge
        return too_large()
    if isinstance(exc, WriteConcernError) or (
        isinstance(exc, OperationFailure) and exc.code == WRITE_CONCERN_FAILED
    ):
        return FHIRError.simple(
            503, "transient",
            "MongoDB did not confirm the write on a majority of its members in time; the "
            "write may have been applied. Read the resource before retrying.",
        )
    reason = _server_unavailable(exc)
    if reason is not None and not (
        isinstance(exc, OperationFailure) and exc.code == WRITE_CONFLICT
    ):
        return unavailable(reason)
    if isinstance(exc, DuplicateKeyError):
        return FHIRError.simple(
            409, "conflict",
            "A concurrent request stored the same key in MongoDB first; retry the request",
        )
    if exc.has_error_label("TransientTransactionError") or (
        isinstance(exc, OperationFailure) and exc.code == WRITE_CONFLICT
    ):
        return transient_transaction_error(exc)
    if exc.has_error_label("UnknownTransactionCommitResult"):
        return unavailable("the outcome of the commit is unknown")
    log.error("MongoDB error %s (code %s)", type(exc).__name__, getattr(exc, "code", None))
    return FHIRError.simple(500, "exception", f"MongoDB error {type(exc).__name__}")


# TransientTransactionError codes that are not a conflict with another transaction
# (review-mongo #7): the server no longer knows the transaction (it aborted it, most
# often for running past transactionLifetimeLimitSeconds, or on a primary change), and
# the lifetime limit itself
NO_SUCH_TRANSACTION = 251
TRANSACTION_TOO_OLD = 290
LIFETIME_SECONDS = 60  # MongoDB's default transactionLifetimeLimitSeconds


def transient_transaction_error(exc: PyMongoError) -> FHIRError:
    """A transaction error labelled TransientTransactionError, told apart by its code:
    only a write conflict (112) is a 409, and one that the unit of work may re-run by
    itself (storage.retry); the others say what happened."""
    code = exc.code if isinstance(exc, OperationFailure) else None
    if code == WRITE_CONFLICT:
        return RetryableConflict.of(
            "A concurrent MongoDB transaction changed the same resource; nothing of this "
            "request was written; retry it"
        )
    if code == TRANSACTION_TOO_OLD:
        return FHIRError.simple(
            413, "too-costly",
            f"The transaction took longer than MongoDB allows ({LIFETIME_SECONDS} s by "
            "default, transactionLifetimeLimitSeconds); nothing was written; split the "
            "Bundle into smaller ones",
        )
    if code == NO_SUCH_TRANSACTION:
        return FHIRError.simple(
            503, "transient",
            "MongoDB aborted the transaction: it ran longer than MongoDB allows "
            f"({LIFETIME_SECONDS} s by default; then split the Bundle) or the primary "
            "changed; nothing was written",
        )
    return unavailable(f"transaction aborted, code {code}")


def mapped(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run `func`, turning PyMongo errors into FHIR errors."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except (PyMongoError, InvalidDocument) as exc:
            raise as_fhir_error(exc) from exc

    return wrapper
