"""SQLite's bulk writes at the driver level: rows as plain tuples, one ``executemany``.

An executemany through SQLAlchemy processes every parameter of every row in
Python (a bind processor per value, and the UTC timestamp's decorator on top),
which for a write of a thousand events costs more than SQLite's own insert.
Here the rows are rendered once, as tuples in the statement's column order,
with the values SQLAlchemy would have sent (:func:`sqlite_timestamp` is the
SQLite ``DATETIME`` text of ``UtcDateTime``), and the statement's text, compiled
once from the same construct, goes to the driver as it is. It still runs on
the SQLAlchemy connection (``exec_driver_sql``), so the engine's statement
events fire as for any other statement.

Only for a SQLite dialect with ``qmark`` parameters, the pysqlite and aiosqlite
default; anything else keeps the SQLAlchemy statement (see :func:`plain_sqlite`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Column
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from .base import StoredEvent
from .schema import UtcDateTime

_SQLITE = sqlite.dialect()
_UTC = timezone.utc


def plain_sqlite(dialect: Dialect) -> bool:
    """Whether statements compiled by :func:`driver_text` run as they are on ``dialect``."""
    return dialect.name == "sqlite" and dialect.paramstyle == "qmark"


def driver_text(statement: ClauseElement) -> tuple[str, tuple[str, ...]]:
    """``statement``'s SQLite text and the order of its parameters."""
    compiled = statement.compile(dialect=_SQLITE)
    assert isinstance(compiled, SQLCompiler)
    assert compiled.positiontup is not None  # qmark parameters are positional
    return compiled.string, tuple(compiled.positiontup)


def sqlite_timestamp(value: datetime) -> str:
    """What ``UtcDateTime`` stores on SQLite: naive UTC, microseconds always shown."""
    if value.tzinfo is not _UTC and value.tzinfo is not None:
        value = value.astimezone(_UTC)
    # The 26 characters of "YYYY-MM-DD HH:MM:SS.ffffff": an offset, if any, is +00:00 now.
    return value.isoformat(" ", "microseconds")[:26]


def sqlite_value(column: Column[Any], value: Any) -> Any:
    """``value`` as the driver receives it for ``column`` (a timestamp as text, the rest as is)."""
    if value is not None and isinstance(column.type, UtcDateTime):
        return sqlite_timestamp(value)
    return value


def event_rows(pairs: Sequence[tuple[str, StoredEvent]]) -> list[tuple[Any, ...]]:
    """Rows of :data:`EVENT_COLUMNS` for ``(run_id, event)`` pairs."""
    return [
        (
            run_id,
            e.sequence,
            e.event_type,
            e.internal,
            e.terminal,
            e.payload,
            sqlite_timestamp(e.created_at),
        )
        for run_id, e in pairs
    ]


EVENT_COLUMNS = (
    "run_id",
    "sequence",
    "event_type",
    "internal",
    "terminal",
    "payload",
    "created_at",
)
"""The order of :func:`event_rows`' values."""
