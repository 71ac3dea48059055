"""Wakeups between processes on PostgreSQL: ``NOTIFY`` in the writing transaction, ``LISTEN``.

A write sends ``pg_notify`` in its own transaction, so the wakeup is delivered
only if (and once) the write commits. Every process listens on one dedicated
connection outside the pool (``NullPool``, autocommit), like the liveness
connection. When that connection is lost it is re-opened with backoff, and
every listener is told ``"all"`` once, since wakeups may have been missed
meanwhile. Polling covers the gap until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._aio import first_set
from ._engines import dedicated_engine
from .notifications import TOPICS, Notifications, Topic

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "llama_workflows_"
_MAX_PAYLOAD = 7900  # PostgreSQL refuses payloads of 8000 bytes and more
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def channel(topic: Topic) -> str:
    """The ``LISTEN`` channel of ``topic``."""
    return CHANNEL_PREFIX + topic


async def notify(conn: AsyncConnection, wakeups: Mapping[Topic, Collection[str]]) -> None:
    """Send ``wakeups`` in ``conn``'s transaction (on PostgreSQL; elsewhere nothing).

    Keys of a topic share payloads of up to about 8 KB, comma separated.
    """
    if conn.dialect.name != "postgresql":
        return
    params = [
        {"channel": channel(topic), "payload": payload}
        for topic, keys in wakeups.items()
        for payload in _payloads(sorted(set(keys)))
    ]
    if params:
        await conn.execute(_NOTIFY, params)


def _payloads(keys: list[str]) -> Iterator[str]:
    start, size = 0, 0
    for index, key in enumerate(keys):
        if size + len(key) + 1 > _MAX_PAYLOAD and index > start:
            yield ",".join(keys[start:index])
            start, size = index, 0
        size += len(key) + 1
    if start < len(keys):
        yield ",".join(keys[start:])


class PostgresNotifications(Notifications):
    """Wakeups of every process on the database, through ``LISTEN`` on one connection.

    The connection is checked every ``check_interval`` seconds (``SELECT 1``)
    and watched by the driver's termination listener.
    """

    remote = True
    application_name = "llama_workflows_asgi notifications"

    def __init__(
        self,
        url: URL,
        *,
        connect_args: dict[str, Any] | None = None,
        check_interval: float = 5.0,
        max_backoff: float = 2.0,
    ) -> None:
        super().__init__()
        self.url = url
        self.check_interval = check_interval
        self.max_backoff = max_backoff
        self._connect_args = dict(connect_args or {})
        self._engine: AsyncEngine | None = None
        self._conn: AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.connected = asyncio.Event()
        """Set while ``LISTEN`` is in force (for tests and health)."""
        self.reconnects = 0

    def published(self, topic: Topic, keys: Collection[str]) -> None:
        """Nothing: the write's own ``NOTIFY`` reaches this process too."""

    async def start(self) -> None:
        """Connect and listen; on failure keep trying in the background."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._keep_listening(), name="workflow-notifications")
        # Wait a little for the first connection, so wakeups work from the start.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.connected.wait()), 5.0)

    async def close(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._drop_connection()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def backend_pid(self) -> int | None:
        """The server process id of the listening connection (``None``: not connected)."""
        if self._conn is None:
            return None
        result = await self._conn.execute(text("SELECT pg_backend_pid()"))
        return int(result.scalar_one())

    # -- the dedicated connection -------------------------------------------------------

    async def _keep_listening(self) -> None:
        delay, first = 0.05, True
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.info("notification connection failed: %s", exc)
                await self._drop_connection()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            delay = 0.05
            if not first:
                self.reconnects += 1
                logger.info("notification connection back; waking every listener")
                self.deliver("all", ())
            first = False
            await self._watch()
            self.connected.clear()
            await self._drop_connection()

    async def _listen(self) -> None:
        if self._engine is None:
            self._engine = dedicated_engine(self.url, self._connect_args, self.application_name)
        self._lost.clear()
        conn = await self._engine.connect()
        self._conn = conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        driver.add_termination_listener(lambda _c: self._lost.set())
        for topic in TOPICS:
            await driver.add_listener(channel(topic), self._on_notify)
        self.connected.set()

    async def _watch(self) -> None:
        """Return once the connection is lost (terminated, or not answering)."""
        while True:
            await first_set([self._lost], self.check_interval)
            if self._lost.is_set() or self._conn is None:
                return
            try:
                await asyncio.wait_for(self._conn.execute(text("SELECT 1")), self.check_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.info("notification connection lost: %s", exc)
                return

    def _on_notify(self, _conn: Any, _pid: int, channel_name: str, payload: str) -> None:
        topic = channel_name.removeprefix(CHANNEL_PREFIX)
        if topic in TOPICS:
            self.deliver(topic, payload.split(",") if payload else ())

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.invalidate(), 2.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)
