"""PostgreSQL liveness tokens: session advisory locks on one dedicated connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import Any

from sqlalchemy import URL, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._engines import dedicated_engine
from .liveness import Liveness, OnChange, owner_key, proves_liveness

logger = logging.getLogger(__name__)

_PROBE = text(
    "SELECT k, CASE WHEN pg_try_advisory_lock(k) THEN pg_advisory_unlock(k) ELSE false END"
    " FROM unnest(CAST(:keys AS bigint[])) AS k"
).bindparams(bindparam("keys", type_=ARRAY(BIGINT)))


class PostgresLiveness(Liveness):
    """Session advisory locks on one dedicated connection (``NullPool``, autocommit).

    The connection is checked every ``check_interval`` seconds (``SELECT 1``,
    bounded by ``check_timeout``) and watched by the driver's termination
    listener; once it is lost the locks are re-taken on a new connection, with
    backoff, and ``held`` is ``False`` meanwhile.
    """

    application_name = "llama_workflows_asgi liveness"
    kind = "advisory_lock"

    def __init__(
        self,
        url: URL,
        *,
        connect_args: dict[str, Any] | None = None,
        check_interval: float = 1.0,
        check_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.check_interval = check_interval
        self.check_timeout = check_timeout
        self._connect_args = dict(connect_args or {})
        self._engine: AsyncEngine | None = None
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self._owners: dict[str, OnChange | None] = {}
        self._watcher: asyncio.Task[None] | None = None
        self.held = True

    def token_key(self, owner_id: str) -> int | None:
        """The advisory lock key of ``owner_id`` (see ``pg_locks.objid``)."""
        return owner_key(owner_id)

    async def acquire(self, owner_id: str, on_change: OnChange | None = None) -> None:
        async with self._lock:
            conn = await self._connection()
            if not await _try_lock(conn, owner_key(owner_id)):
                raise RuntimeError(f"the liveness token of {owner_id!r} is held elsewhere")
            self._owners[owner_id] = on_change
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="workflow-liveness")

    async def probe(self, owner_ids: Collection[str]) -> set[str]:
        candidates = {owner_key(o): o for o in owner_ids if proves_liveness(o)}
        candidates = {k: o for k, o in candidates.items() if o not in self._owners}
        if not candidates or not self.held:
            return set()
        async with self._lock:
            try:
                rows = await self._probe_keys(list(candidates))
            except Exception:
                if self._owners:
                    # The connection holds our tokens: the watcher judges it.
                    raise
                await self._drop_connection()  # a prober's own: one retry on a fresh one
                rows = await self._probe_keys(list(candidates))
        return {candidates[key] for key, free in rows if free}

    async def _probe_keys(self, keys: list[int]) -> list[Any]:
        conn = await self._connection()
        result = await asyncio.wait_for(conn.execute(_PROBE, {"keys": keys}), self.check_timeout)
        return list(result.all())

    async def release(self, owner_id: str | None = None) -> None:
        owners = list(self._owners) if owner_id is None else [owner_id]
        for owner in owners:
            self._owners.pop(owner, None)
        if self._owners:
            async with self._lock:
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        await self._conn.execute(
                            text("SELECT pg_advisory_unlock(:k)"), {"k": owner_key(owners[0])}
                        )
            return
        await self._shutdown()

    async def _shutdown(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        async with self._lock:
            await self._drop_connection()
            if self._engine is not None:
                await self._engine.dispose()
                self._engine = None
        self.held = True

    # -- the dedicated connection -------------------------------------------------------

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            if self._engine is None:
                self._engine = dedicated_engine(self.url, self._connect_args, self.application_name)
            conn = await self._engine.connect()
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            if driver is not None and hasattr(driver, "add_termination_listener"):
                driver.add_termination_listener(lambda _c: self._lost("connection terminated"))
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.invalidate(), self.check_timeout)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self.check_timeout)

    def _lost(self, why: str) -> None:
        if not self.held or not self._owners:
            return
        logger.warning("liveness connection lost (%s); this process stops owning runs", why)
        self.held = False
        self._notify(False)
        if self._watcher is not None:
            self._watcher.cancel()
        self._watcher = asyncio.get_running_loop().create_task(
            self._regain(), name="workflow-liveness"
        )

    def _notify(self, held: bool) -> None:
        for callback in list(self._owners.values()):
            if callback is not None:
                try:
                    callback(held)
                except Exception:
                    logger.exception("liveness callback failed")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                async with self._lock:
                    conn = await self._connection()
                    await asyncio.wait_for(conn.execute(text("SELECT 1")), self.check_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lost(f"{type(exc).__name__}: {exc}")
                return

    async def _regain(self) -> None:
        delay = 0.05
        while self._owners:
            try:
                if await self._retake():
                    break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.info("liveness reconnect failed: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.check_interval)
        else:
            return
        logger.warning("liveness token held again")
        self.held = True
        self._notify(True)
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch(), name="workflow-liveness"
        )

    async def _retake(self) -> bool:
        """Reconnect and take every token again; ``False`` while the old session holds one."""
        async with self._lock:
            await self._drop_connection()
            conn = await self._connection()
            for owner in self._owners:
                if not await _try_lock(conn, owner_key(owner)):
                    # The server has not noticed the old session is gone yet.
                    await self._drop_connection()
                    return False
            return True


async def _try_lock(conn: AsyncConnection, key: int) -> bool:
    result = await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
    return bool(result.scalar())
