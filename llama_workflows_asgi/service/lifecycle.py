"""The life of one run service: started, stopping, stopped, and what it admits meanwhile.

``start`` opens the store and takes this process's liveness token before any
room works; ``begin_stop`` / ``stop`` are the graceful stop (every local run
checkpointed and released, see ``shutdown.py``); losing the liveness token
stops every local run at once, since other processes may adopt them now.
:meth:`Lifecycle.admit` is the one check new work passes (a start, an event
sent in, a retry): the service runs, is not stopping, holds its liveness token
and renews its heartbeat in time.
"""

from __future__ import annotations

import asyncio
import time

from ..errors import StoreUnavailableError
from ..store.base import AbstractWorkflowStore
from .config import ServiceConfig
from .health import background_problem
from .ownership import Owner
from .rooms import Rooms
from .runtime import DurableRuntime


class Lifecycle:
    """Starts and stops one service's rooms, in order, and says whether it admits work."""

    def __init__(
        self,
        store: AbstractWorkflowStore,
        owner: Owner,
        config: ServiceConfig,
        runtime: DurableRuntime,
        rooms: Rooms,
    ) -> None:
        self._store = store
        self._owner = owner
        self._config = config
        self._runtime = runtime
        self._rooms = rooms
        self.running = False
        self._drain: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        """Whether a graceful stop began (new runs and events are refused)."""
        return self._rooms.stop.draining

    @property
    def drained(self) -> bool:
        """Whether a graceful stop that began has released every local run."""
        return self._drain is not None and self._drain.done()

    async def start(self) -> None:
        """Open the store, take the liveness token, then start every room. Idempotent."""
        if self.running:
            return
        rooms = self._rooms
        await self._store.start()
        await self._store.liveness.acquire(self._owner.id, self.on_liveness)
        await self._store.notifications.start()
        await rooms.supervisor.register()
        await self._runtime.launch()
        rooms.stop.reset()
        self._drain = None
        rooms.live.writer.start()
        rooms.supervisor.start()
        rooms.tail.start()
        rooms.retention.start()
        self.running = rooms.live.releases_idle = True

    def begin_stop(self) -> None:
        """Refuse new work and begin releasing every local run. Idempotent."""
        if not self.running or self._drain is not None:
            return
        self._rooms.stop.begin()
        self._drain = asyncio.ensure_future(self._rooms.shutdown.release_all(time.monotonic()))

    async def stop(self) -> None:
        """Complete a graceful stop, then close the rooms and the store. Idempotent."""
        if not self.running:
            return
        self.begin_stop()
        assert self._drain is not None
        await asyncio.shield(self._drain)  # a cancelled caller leaves the release running
        rooms = self._rooms
        self.running = rooms.live.releases_idle = False
        await rooms.retention.stop()
        await rooms.live.writer.stop()
        rooms.live.clear()
        await self._store.liveness.release(self._owner.id)
        await self._store.notifications.close()
        await self._store.close()
        await self._runtime.destroy()

    def on_liveness(self, held: bool) -> None:
        """The liveness token was lost (others may adopt our runs now) or is held again."""
        if held or not self.running:
            return
        self._rooms.live.stop_all_now()

    def admit(self) -> None:
        """Raise ``StoreUnavailableError`` (503, retry soon) unless new work may start here."""
        if not self.running:
            raise StoreUnavailableError("The workflow service is not running", retry_after=5)
        self._rooms.stop.refuse_if_stopping()
        if not self._store.liveness.held:
            raise StoreUnavailableError(
                "The server lost its database session and cannot own runs right now", retry_after=1
            )
        if self._rooms.supervisor.heartbeat_late():
            raise StoreUnavailableError(
                "The server could not renew its ownership heartbeat in time", retry_after=1
            )

    async def problem(self) -> str | None:
        """What keeps the service from working (see ``WorkflowService.health_problem``)."""
        if not self.running:
            return "The workflow service is not running"
        if self.draining:
            return "The workflow service is stopping"
        rooms = self._rooms
        return await background_problem(
            self._store, self._config, rooms.live.writer, rooms.supervisor
        )
