"""Database URLs and the engines the store creates for them.

SQLite gets two engines on the same file: a write engine whose pool holds one
connection and whose transactions start with ``BEGIN IMMEDIATE`` (so a write
transaction takes the file's write lock up front, and waits ``busy_timeout``
for it, instead of failing halfway when it upgrades a read lock), and a read
engine with several connections and plain ``BEGIN`` (WAL lets readers run
beside the writer). PostgreSQL gets one asyncpg engine whose connections are
checked on checkout, so those broken by a server restart are replaced
(``_pg_checkout``); its reads run in autocommit and its group-commit writer
keeps one connection between batches while they come (``_pg_writer``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import URL, event, make_url
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, NullPool

from ._batch import Transact, in_transaction
from ._pg_checkout import ping_when_idle
from ._pg_writer import HeldConnectionWriter, can_hold
from ._sqlite_writer import LOOP_COALESCE, in_loop

_MIN_SQLITE = (3, 35, 0)

DEFAULT_URL = "sqlite+aiosqlite:///handlers.db"
"""Where the store keeps its data when given nothing: ``handlers.db`` in the working directory."""

# Plain or synchronous spellings users write, mapped to the async drivers.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
}


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and map it onto an async driver (aiosqlite or asyncpg).

    Raises ``ValueError`` for databases other than SQLite and PostgreSQL.
    """
    parsed = make_url(url)
    parsed = parsed.set(drivername=_ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername))
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"Unsupported database {parsed.drivername!r}: use SQLite or PostgreSQL")
    return parsed


def is_memory_sqlite(url: URL) -> bool:
    """Whether ``url`` names a private in-memory SQLite database."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def safe_url(url: URL | str) -> str:
    """``url`` as text with its password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)


@dataclass(frozen=True)
class Engines:
    """The engines a store uses; ``owned`` says whether the store disposes them."""

    write: AsyncEngine
    read: AsyncEngine
    owned: bool
    hold_writes: bool = False
    """Whether the group commit keeps one connection between batches (``_pg_writer``)."""
    # The writers handed out by writer() that keep a connection, closed by dispose().
    _held: list[HeldConnectionWriter] = field(default_factory=list, compare=False, repr=False)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.write.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction on the write engine, committed on exit."""
        async with self.write.begin() as conn:
            if not self.owned and self.dialect == "sqlite":
                await _begin_immediate(conn)
            yield conn

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection of the read engine for one read.

        On PostgreSQL it runs in autocommit: each SELECT sees its own snapshot,
        as it would inside a READ COMMITTED transaction, without the ``BEGIN``
        and ``ROLLBACK`` round trips (reads never lock or write).
        """
        async with self.read.connect() as conn:
            if self.dialect == "postgresql":
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @property
    def writes_in_loop(self) -> bool:
        """Whether the group commit's batches run in the loop's thread (see ``_sqlite_writer``:
        on a SQLite file the store opened; a private memory database's stay in its thread)."""
        return self.owned and self.dialect == "sqlite" and not is_memory_sqlite(self.write.url)

    @property
    def coalesce(self) -> float:
        """The group commit's ``coalesce``: longer when its writes hold the loop."""
        return LOOP_COALESCE if self.writes_in_loop else 1.0

    def writer(self) -> Transact[AsyncConnection]:
        """How the group commit runs a batch, on the engines the store created: on
        SQLite, in the event loop's thread while the file's write lock is free, else
        in one hand-off to the driver's thread (``_sqlite_writer``); on one kept
        PostgreSQL connection (``_pg_writer``, asyncpg on a pool with one to spare);
        otherwise, and on a host's engine, in :meth:`transaction`."""
        if self.owned and self.dialect == "sqlite":
            return in_loop(self.write, "BEGIN IMMEDIATE")
        if self.owned and self.hold_writes:
            held = HeldConnectionWriter(self.write)
            self._held.append(held)
            return held
        return in_transaction(self.transaction)

    async def dispose(self) -> None:
        """Close the pools of engines the store created (never a host's)."""
        for held in self._held:
            await held.aclose()
        if not self.owned:
            return
        await self.write.dispose()
        if self.read is not self.write:
            await self.read.dispose()


async def _begin_immediate(conn: AsyncConnection) -> None:
    # A host's SQLite engine lacks our "begin" listener; in the driver's legacy
    # mode nothing has been sent yet, so take the write lock explicitly.
    raw = await conn.get_raw_connection()
    if not getattr(raw.driver_connection, "in_transaction", True):
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engines(url: URL, *, busy_timeout: float, options: dict[str, Any]) -> Engines:
    """Engines for ``url``, configured for the store (see the module docstring)."""
    if url.get_backend_name() == "postgresql":
        engine = _postgres_engine(url, options)
        return Engines(engine, engine, owned=True, hold_writes=can_hold(engine, options))
    if sqlite3.sqlite_version_info < _MIN_SQLITE:
        raise RuntimeError(
            f"SQLite {sqlite3.sqlite_version} is too old: the store needs 3.35 or newer "
            "(UPDATE ... FROM and RETURNING)"
        )
    # No rollback when the write connection goes back to its pool: every user
    # ends its transaction itself (``begin()`` blocks, the writer's batches, see
    # ``_sqlite_writer``), so the reset would be one more thread hand-off per batch.
    write = _sqlite_engine(
        url, busy_timeout, "BEGIN IMMEDIATE", pool_size=1, max_overflow=0, pool_reset_on_return=None
    )
    if is_memory_sqlite(url):
        # A private memory database exists on one connection only: share it.
        return Engines(write, write, owned=True)
    read = _sqlite_engine(url, busy_timeout, "BEGIN", **options)
    return Engines(write, read, owned=True)


def _postgres_engine(url: URL, options: dict[str, Any]) -> AsyncEngine:
    # asyncpg says when the server closed a connection: a ping is needed only
    # after an idle spell (``_pg_checkout``); other drivers ping every checkout.
    if url.get_driver_name() != "asyncpg":
        return create_async_engine(url, pool_pre_ping=True, **options)
    engine = create_async_engine(url, **options)
    ping_when_idle(engine)
    return engine


def _sqlite_engine(url: URL, busy_timeout: float, begin: str, **options: Any) -> AsyncEngine:
    options.setdefault("poolclass", AsyncAdaptedQueuePool)
    engine = create_async_engine(url, **options)
    configure_sqlite(engine.sync_engine, busy_timeout=busy_timeout, begin=begin)
    return engine


def configure_sqlite(engine: Engine, *, busy_timeout: float, begin: str = "BEGIN") -> None:
    """Install the store's SQLite pragmas and explicit ``begin`` statement on ``engine``.

    The driver's own transaction handling is switched off (it never begins
    before a SELECT and cannot begin IMMEDIATE); SQLAlchemy's ``begin`` event
    emits the statement instead, the recipe from SQLAlchemy's SQLite docs.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)


def dedicated_engine(url: URL, connect_args: dict[str, Any], application_name: str) -> AsyncEngine:
    """An engine for one long-lived PostgreSQL session outside the pool.

    ``application_name`` tells its session apart in ``pg_stat_activity`` (the
    liveness session, the notifications listener).
    """
    args = dict(connect_args)
    settings = dict(args.get("server_settings") or {})
    settings.setdefault("application_name", application_name)
    args["server_settings"] = settings
    return create_async_engine(url, poolclass=NullPool, connect_args=args)
