"""SQLite's write transactions in one hand-off: the whole batch runs in the driver's thread.

aiosqlite runs each SQLite connection in a thread of its own and sends every
driver call there and back (execute, fetch, BEGIN, COMMIT...): about ten
thread hand-offs per batch, each a wakeup and a fight for the GIL. Here the
batch's body runs in that thread, as one call: SQLAlchemy's synchronous
pysqlite dialect drives the very same ``sqlite3`` connection (same pragmas,
same ``BEGIN IMMEDIATE``, same single write connection), and commits before
the writer hears back, so nothing is acknowledged before it is durable.

The body is the group commit's ordinary coroutine over a connection; it is
given :class:`_InThread`, whose methods never suspend, so one ``send`` runs it
to the end. Statements and commits are announced as events of the store's
write engine, as before, for the host's instrumentation (and the tests').
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, CursorResult, Engine, NestedTransaction
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import Executable

Body = Callable[[AsyncConnection], Awaitable[None]]

# One synchronous engine per driver connection (the write engine holds one).
_ENGINES: weakref.WeakKeyDictionary[Any, Engine] = weakref.WeakKeyDictionary()
_FORWARDED = ("before_cursor_execute", "after_cursor_execute", "commit", "rollback")


def in_driver_thread(write: AsyncEngine, begin: str) -> Callable[[Body], Awaitable[None]]:
    """A ``Transact`` for ``write`` (aiosqlite) running each batch in its driver thread."""

    async def transact(body: Body) -> None:
        async with write.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection  # the aiosqlite.Connection
            assert driver is not None
            # aiosqlite queues a function for its thread and awaits its result:
            # the one hand-off of this batch.
            try:
                await driver._execute(_run, _engine_for(driver, write, begin), body)
            except BaseException:
                # The error went by the async pool, which would hand this
                # connection out again even if the driver closed it: drop it.
                await conn.invalidate()
                raise

    return transact


def _engine_for(driver: Any, write: AsyncEngine, begin: str) -> Engine:
    engine = _ENGINES.get(driver)
    if engine is None:
        connection: sqlite3.Connection = driver._conn
        engine = create_engine("sqlite://", creator=lambda: connection, poolclass=StaticPool)

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin)

        for name in _FORWARDED:
            event.listen(engine, name, _forward(write.sync_engine, name))
        _ENGINES[driver] = engine
    return engine


def _forward(target: Engine, name: str) -> Callable[..., None]:
    def forward(*args: Any) -> None:
        getattr(target.dispatch, name)(*args)

    return forward


def _run(engine: Engine, body: Body) -> None:
    """In the driver's thread: one transaction around ``body``, committed on success."""
    with engine.begin() as conn:
        steps = body(cast(AsyncConnection, _InThread(conn))).__await__()
        try:
            next(steps)
        except StopIteration:
            return
        steps.close()
        raise RuntimeError("a batch function awaited something other than its connection")


class _InThread:
    """The part of ``AsyncConnection`` batch functions use, over a synchronous connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect

    async def execute(
        self,
        statement: Executable,
        parameters: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    ) -> CursorResult[Any]:
        return self._conn.execute(statement, parameters)

    async def exec_driver_sql(
        self, statement: str, parameters: Sequence[tuple[Any, ...]]
    ) -> CursorResult[Any]:
        return self._conn.exec_driver_sql(statement, parameters)

    async def scalar(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Any:
        return self._conn.scalar(statement, parameters)

    def begin_nested(self) -> _Savepoint:
        return _Savepoint(self._conn.begin_nested())


class _Savepoint:
    """``async with conn.begin_nested():`` over a synchronous savepoint."""

    def __init__(self, savepoint: NestedTransaction) -> None:
        self._savepoint = savepoint

    async def __aenter__(self) -> _Savepoint:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._savepoint.__exit__(kind, error, traceback)
