"""The host's handle on a service: start it, stop it, ask whether it is healthy.

These methods of ``WorkflowService`` check no caller and touch no run: they
hand the service's own life to ``lifecycle.py`` (start, graceful stop, what
``/health`` reports). The facade (``service.py``) inherits them; its own methods
are the calls on runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from .lifecycle import Lifecycle

S = TypeVar("S", bound="ServiceControl")


class ServiceControl:
    """Starting, stopping and the health of one service (its ``Lifecycle`` does the work)."""

    _lifecycle: Lifecycle

    @property
    def running(self) -> bool:
        """Whether the service was started and is not stopped yet."""
        return self._lifecycle.running

    @property
    def draining(self) -> bool:
        """Whether a graceful stop began (new runs and events are refused)."""
        return self._lifecycle.draining

    @property
    def drained(self) -> bool:
        """Whether a graceful stop that began has released every local run."""
        return self._lifecycle.drained

    async def start(self) -> None:
        """Open the store, take this process's liveness token, write progress, adopt runs."""
        await self._lifecycle.start()

    def begin_stop(self) -> None:
        """Begin a graceful stop now; :meth:`stop` completes it.

        New runs and events are refused (``StoreUnavailableError``: 503 with
        ``Retry-After``), open streams and waits end, and every local run is
        stopped, checkpointed and released within ``stop_timeout``, to be
        resumed by the next owner. The router's lifespan calls this on SIGINT or
        SIGTERM, before the server waits for open connections; a host with its
        own signal handling calls it there. Idempotent.
        """
        self._lifecycle.begin_stop()

    async def stop(self) -> None:
        """Stop gracefully: checkpoint and release every local run, never failing one."""
        await self._lifecycle.stop()

    @asynccontextmanager
    async def running_context(self: S) -> AsyncIterator[S]:
        """``async with service.running_context():`` starts and stops the service."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def healthy(self) -> bool:
        """Whether the service is started, its store answers and its background work keeps up."""
        return await self.health_problem() is None

    async def health_problem(self) -> str | None:
        """What keeps the service from working, or ``None`` when it is healthy.

        Unhealthy: not started or stopping, the liveness token is lost, the
        store does not answer, progress has waited unwritten longer than
        ``max_unwritten_age``, or no ownership round has completed for half of
        ``lease_ttl`` (the heartbeat may lapse and runs move elsewhere).
        """
        return await self._lifecycle.problem()
