"""PostgreSQL's write transactions on one connection the writer keeps between batches.

A checkout per batch cost three round trips before the batch's own while the
pool pinged every checkout (a ``BEGIN``, a ``;`` and a ``ROLLBACK`` on asyncpg), and
still costs the pool's bookkeeping. The writer
runs one batch at a time, so it keeps one connection checked out instead and
pays for the ping only when the connection has been idle (while batches come
back to back the previous one has just proven it). Each batch is still its own
transaction, committed before the group commit acknowledges anything.

Reads share the pool, so the kept connection goes back to it once no batch
came for ``idle_ping`` seconds (the next batch checks one out again, pinged by
the pool), and a pool that cannot spare a connection gets no such writer
(:func:`can_hold`). A connection the driver saw closed (a server restart sends
a termination message) is dropped before the batch, never used; a batch that
fails drops it too (invalidated when the error says the connection broke, or
the batch was cancelled). A drop runs to its end even when its caller is
cancelled, so the pool never loses the checkout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool, QueuePool

from ._errors import unavailable

Body = Callable[[AsyncConnection], Awaitable[None]]

_MAX_OVERFLOW = 10  # create_engine's default max_overflow
_IDLE_PING = 1.0
"""Seconds without a batch after which the kept connection goes back to the pool."""


def can_hold(engine: AsyncEngine, options: Mapping[str, Any]) -> bool:
    """Whether a :class:`HeldConnectionWriter` suits ``engine``, created with
    ``options``: asyncpg (whose connections say when the server closed them) on
    a pool with a connection to spare for reads; other drivers and pools keep
    the checkout per batch."""
    pool = engine.sync_engine.pool
    if engine.dialect.driver != "asyncpg":
        return False
    if isinstance(pool, QueuePool):
        # The pool does not tell its overflow: the options do (-1 is unbounded),
        # else create_engine's documented default; a pool passed in is judged by its size.
        overflow = 0 if "pool" in options else int(options.get("max_overflow", _MAX_OVERFLOW))
        return overflow < 0 or pool.size() + overflow >= 2
    return isinstance(pool, NullPool)  # a single-connection pool has none to spare


class HeldConnectionWriter:
    """A ``Transact`` for a PostgreSQL engine: every batch on one kept connection."""

    def __init__(self, engine: AsyncEngine, *, idle_ping: float = _IDLE_PING) -> None:
        self._engine = engine
        self._idle_ping = idle_ping
        self._conn: AsyncConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_used = 0.0
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def __call__(self, body: Body) -> None:
        self._busy = True
        try:
            conn = await self._connection()
            async with conn.begin():
                await body(conn)
        except BaseException as error:
            # Cancelled mid-statement, the connection's state is unknown: never reuse it.
            broken = not isinstance(error, Exception) or unavailable(error) is not None
            await self._drop(broken=broken)
            raise
        finally:
            self._busy = False
        self._used(asyncio.get_running_loop())

    async def aclose(self) -> None:
        """Give the kept connection back to the pool (before the engine is disposed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._drop(broken=False)
        loop = asyncio.get_running_loop()
        returning = [task for task in self._closing if task.get_loop() is loop]
        if returning:
            await asyncio.wait(returning)  # returns after an idle period, still under way

    async def _connection(self) -> AsyncConnection:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            await self._drop(broken=True)  # a connection of a previous event loop cannot be used
            self._timer = None  # nor can its timer fire here
        if self._conn is not None and self._stale(loop.time()):
            await self._drop(broken=self._driver_closed())
        if self._conn is None:
            self._conn = await self._engine.connect()  # the pool pings it
            self._loop = loop
        return self._conn

    def _stale(self, now: float) -> bool:
        return self._driver_closed() or now - self._last_used > self._idle_ping

    def _driver_closed(self) -> bool:
        assert self._conn is not None
        if self._conn.invalidated or self._conn.closed:
            return True
        raw = self._conn.sync_connection
        driver = None if raw is None else raw.connection.driver_connection
        return bool(driver is None or driver.is_closed())

    def _used(self, loop: asyncio.AbstractEventLoop) -> None:
        self._last_used = loop.time()
        if self._timer is None:  # one timer per idle period, not one per batch
            self._timer = loop.call_later(self._idle_ping, self._on_idle, loop)

    def _on_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if self._busy or self._conn is None or self._loop is not loop:
            return  # a batch under way schedules the next check when it ends
        left = self._last_used + self._idle_ping - loop.time()
        if left > 0:
            self._timer = loop.call_later(left, self._on_idle, loop)
            return
        conn, self._conn = self._conn, None
        self._close_soon(conn, broken=False)

    async def _drop(self, *, broken: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._loop is not asyncio.get_running_loop():
            _invalidate_now(conn)
            return
        task = self._close_soon(conn, broken=broken)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])  # the pool has the checkout back before the caller goes on
            raise

    def _close_soon(self, conn: AsyncConnection, *, broken: bool) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(_close(conn, broken=broken))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task


async def _close(conn: AsyncConnection, *, broken: bool) -> None:
    try:
        if broken and not conn.invalidated:
            await conn.invalidate()
        await conn.close()
    except Exception:  # the connection is gone either way; the pool replaces it
        pass


def _invalidate_now(conn: AsyncConnection) -> None:
    # Its event loop is not running here, so nothing can be awaited on it: the
    # pool cuts the driver's socket and counts the checkout returned, synchronously.
    try:
        if conn.sync_connection is not None:
            conn.sync_connection.invalidate()
    except Exception:  # the connection is gone either way; the pool replaces it
        pass
