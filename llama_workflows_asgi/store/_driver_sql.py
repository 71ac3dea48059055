"""The hot bulk writes at the driver level: rows rendered once, one statement.

An executemany through SQLAlchemy processes every parameter of every row in
Python (a bind processor per value, and the UTC timestamp's decorator on top),
which for a write of a thousand events costs more than SQLite's own insert;
PostgreSQL's array parameters (``_pg_bulk``) likewise run an item processor
over every element of every array. Here the rows are rendered once, with the
values SQLAlchemy would have sent, and the statement's text, compiled once from
the same construct, goes to the driver as it is. It still runs on the
SQLAlchemy connection (``exec_driver_sql``), so the engine's statement events
fire as for any other statement.

* SQLite, for a dialect with ``qmark`` parameters (the pysqlite and aiosqlite
  default, see :func:`plain_sqlite`): rows as tuples in the statement's column
  order, a timestamp as the ``DATETIME`` text of ``UtcDateTime``
  (:func:`sqlite_timestamp`).
* PostgreSQL on asyncpg (:func:`plain_asyncpg`): one array per column, each
  timestamp aware, which asyncpg encodes in C as ``UtcDateTime`` would have
  had it sent (the same instant).

Any other driver keeps the SQLAlchemy statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Column
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from .base import StoredEvent
from .schema import UtcDateTime

_SQLITE = sqlite.dialect()
_ASYNCPG = PGDialect_asyncpg()  # type: ignore[no-untyped-call]  # its __init__ has no types
_UTC = timezone.utc


def plain_sqlite(dialect: Dialect) -> bool:
    """Whether statements compiled by :func:`driver_text` run as they are on ``dialect``."""
    return dialect.name == "sqlite" and dialect.paramstyle == "qmark"


def plain_asyncpg(dialect: Dialect) -> bool:
    """Whether statements compiled by :func:`asyncpg_text` run as they are on ``dialect``."""
    return dialect.name == "postgresql" and dialect.driver == "asyncpg"


def driver_text(statement: ClauseElement) -> tuple[str, tuple[str, ...]]:
    """``statement``'s SQLite text and the order of its parameters."""
    return _positional(statement, _SQLITE)


def asyncpg_text(statement: ClauseElement) -> tuple[str, tuple[str, ...]]:
    """``statement``'s PostgreSQL text for asyncpg (``$1``...) and the order of its parameters."""
    return _positional(statement, _ASYNCPG)


def _positional(statement: ClauseElement, dialect: Dialect) -> tuple[str, tuple[str, ...]]:
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    assert compiled.positiontup is not None  # qmark and $n parameters are positional
    return compiled.string, tuple(compiled.positiontup)


def sqlite_timestamp(value: datetime) -> str:
    """What ``UtcDateTime`` stores on SQLite: naive UTC, microseconds always shown.

    The 26 characters of ``YYYY-MM-DD HH:MM:SS.ffffff``. The text up to the
    minute is kept from the last call (the events of one write share it), so
    most calls format only the seconds: half the cost of ``isoformat`` on an
    aware datetime, which formats its offset too.
    """
    global _last_minute
    if value.tzinfo is not _UTC and value.tzinfo is not None:
        value = value.astimezone(_UTC)
    minute = value.toordinal() * 1440 + value.hour * 60 + value.minute
    last, prefix = _last_minute
    if minute != last:
        prefix = value.isoformat(" ", "minutes")[:16] + ":"
        _last_minute = minute, prefix  # one assignment: another thread reads a whole pair
    return prefix + _SECONDS[value.second] + str(1_000_000 + value.microsecond)[1:]


_last_minute: tuple[int, str] = (-1, "")
"""The minute :func:`sqlite_timestamp` formatted last (minutes since year 1) and its text."""
_SECONDS = [f"{second:02d}." for second in range(60)]


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


def event_arrays(pairs: Sequence[tuple[str, StoredEvent]]) -> tuple[tuple[Any, ...], ...]:
    """One array per column of :data:`EVENT_COLUMNS` for ``(run_id, event)`` pairs."""
    rows = [
        (
            run_id,
            e.sequence,
            e.event_type,
            e.internal,
            e.terminal,
            e.payload,
            e.created_at if e.created_at.tzinfo is not None else e.created_at.replace(tzinfo=_UTC),
        )
        for run_id, e in pairs
    ]
    return tuple(zip(*rows, strict=True))


EVENT_COLUMNS = (
    "run_id",
    "sequence",
    "event_type",
    "internal",
    "terminal",
    "payload",
    "created_at",
)
"""The order of :func:`event_rows`' values and :func:`event_arrays`' arrays."""
