"""PostgreSQL's write transactions on one connection the writer keeps between batches.

A checkout per batch cost three round trips before the batch's own: the pool's
pre-ping is a ``BEGIN``, a ``;`` and a ``ROLLBACK`` on asyncpg. The writer
runs one batch at a time, so it keeps one connection checked out instead and
pays for the ping only when the connection has been idle (while batches come
back to back the previous one has just proven it). Each batch is still its own
transaction, committed before the group commit acknowledges anything.

A connection the driver saw closed (a server restart sends a termination
message) is dropped before the batch, never used; a batch that fails drops
it too (invalidated when the error says the connection broke, or the batch
was cancelled), and the next
batch checks out a fresh one, pinged by the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._errors import unavailable

Body = Callable[[AsyncConnection], Awaitable[None]]

_IDLE_PING = 1.0
"""Seconds without a batch after which the kept connection is pinged again (by the pool)."""


class HeldConnectionWriter:
    """A ``Transact`` for a PostgreSQL engine: every batch on one kept connection."""

    def __init__(self, engine: AsyncEngine, *, idle_ping: float = _IDLE_PING) -> None:
        self._engine = engine
        self._idle_ping = idle_ping
        self._conn: AsyncConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_used = 0.0

    async def __call__(self, body: Body) -> None:
        conn = await self._connection()
        try:
            async with conn.begin():
                await body(conn)
        except BaseException as error:
            # Cancelled mid-statement, the connection's state is unknown: never reuse it.
            broken = not isinstance(error, Exception) or unavailable(error) is not None
            await self._drop(broken=broken)
            raise
        self._last_used = asyncio.get_running_loop().time()

    async def aclose(self) -> None:
        """Give the kept connection back to the pool (before the engine is disposed)."""
        await self._drop(broken=False)

    async def _connection(self) -> AsyncConnection:
        loop = asyncio.get_running_loop()
        if self._conn is not None and self._loop is not loop:
            self._conn = None  # a connection of a previous event loop cannot be used (or closed)
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

    async def _drop(self, *, broken: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None or self._loop is not asyncio.get_running_loop():
            return
        try:
            if broken and not conn.invalidated:
                await conn.invalidate()
            await conn.close()
        except Exception:  # the connection is gone either way; the pool replaces it
            pass
