"""Turning driver errors into the package's errors.

Only failures that say "the database cannot be used right now" become
:class:`StoreUnavailableError`; anything else (a bug, a constraint the store did
not expect) keeps its own type so it is not mistaken for an outage.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import exc as sa_exc

from ..errors import StoreUnavailableError

# SQLSTATE classes and codes (PostgreSQL) meaning "not now": connection
# exceptions, insufficient resources, operator intervention, system errors.
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57", "58")
_DISK_FULL_SQLSTATES = ("53100",)
# Serialization failure and deadlock: the whole transaction may simply be retried.
_RETRYABLE_SQLSTATES = ("40001", "40P01")

# SQLite reports everything as OperationalError; the message says which.
_SQLITE_MESSAGES = (
    ("database is locked", "database is locked by another process"),
    ("database table is locked", "database is locked by another process"),
    ("database or disk is full", "database or disk is full"),
    ("disk i/o error", "disk I/O error while writing the database"),
    ("unable to open database file", "cannot open the database file"),
    ("readonly database", "the database file is read-only"),
)


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE code carried by a driver error, if any."""
    orig = getattr(error, "orig", None) or error
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def is_retryable_conflict(error: BaseException) -> bool:
    """Whether the transaction lost a serialization race and may be re-run as is."""
    return sqlstate(error) in _RETRYABLE_SQLSTATES


def unavailable(error: BaseException) -> StoreUnavailableError | None:
    """The ``StoreUnavailableError`` equivalent of ``error``, or ``None`` if it is not an outage."""
    if isinstance(error, StoreUnavailableError):
        return error
    reason = _reason(error)
    if reason is None:
        return None
    return StoreUnavailableError(reason)


def _reason(error: BaseException) -> str | None:
    if isinstance(error, sa_exc.TimeoutError):
        return "timed out waiting for a database connection from the pool"
    if isinstance(error, (OSError, asyncio.TimeoutError)):
        return f"cannot reach the database: {_describe(error)}"
    if not isinstance(error, sa_exc.DBAPIError):
        return None
    message = str(error.orig).lower()
    for needle, reason in _SQLITE_MESSAGES:
        if needle in message:
            return reason
    code = sqlstate(error)
    if code in _DISK_FULL_SQLSTATES:
        return "database or disk is full"
    if error.connection_invalidated or isinstance(
        error, (sa_exc.OperationalError, sa_exc.InterfaceError)
    ):
        return f"cannot reach the database: {_describe(error.orig or error)}"
    if code is not None and code.startswith(_UNAVAILABLE_SQLSTATE_CLASSES):
        return f"cannot reach the database: {_describe(error.orig or error)}"
    return None


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return text or type(error).__name__
