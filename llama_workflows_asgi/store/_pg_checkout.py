"""Checking a pooled PostgreSQL connection at checkout, pinging it only after it sat idle.

The pool's own pre-ping pings on every checkout, and on asyncpg a ping is
three round trips (``BEGIN``, ``;``, ``ROLLBACK``): more than the read it
precedes. Here a checkout always asks the driver whether it saw the
connection closed (a server that stops or restarts tells its sessions, so
such connections are known dead for free), and pings, as the pre-ping would,
only a connection that came back to the pool over ``idle`` seconds ago. A connection
found dead is replaced by the pool before anyone uses it
(``DisconnectionError``, SQLAlchemy's documented recipe for custom checks);
one that broke silently within the last ``idle`` seconds fails the statement
sent on it, which the store reports as an outage, and the pool replaces it.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

_IDLE = 1.0
"""Seconds unused after which a connection is pinged before it is handed out."""

_USED = "llama_workflows_asgi.used_at"


def ping_when_idle(engine: AsyncEngine, *, idle: float = _IDLE) -> None:
    """Check ``engine``'s connections at checkout (create it without ``pool_pre_ping``)."""
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "connect")
    def _connected(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is None or driver.is_closed():
            raise exc.DisconnectionError("the server closed the connection")
        if time.monotonic() - record.info.get(_USED, 0.0) <= idle:
            return
        try:
            dialect.do_ping(dbapi_connection)  # runs in the checkout's greenlet
        except Exception as error:
            raise exc.DisconnectionError(f"the connection did not answer: {error}") from error
