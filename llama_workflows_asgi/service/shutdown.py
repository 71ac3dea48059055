"""The order of a graceful stop: what stops first, and what is written last.

Retention, ownership rounds and the shared stream tail stop first (their statements would compete
with the final writes), then every local run's engine, then the last progress
and the release of every run owned here are written, all within
``stop_timeout``. Whatever cannot be written in time is resumed by the next
owner from the last checkpoint written.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..errors import StoreUnavailableError
from ..store.base import AbstractWorkflowStore
from .config import ServiceConfig
from .live_runs import LiveRuns
from .ownership import Owner
from .retention import RetentionTask
from .supervisor import Supervisor
from .tail import SharedTail

logger = logging.getLogger(__name__)


class Shutdown:
    """Releases every local run, in order, within ``stop_timeout``."""

    def __init__(
        self,
        store: AbstractWorkflowStore,
        owner: Owner,
        config: ServiceConfig,
        *,
        live: LiveRuns,
        supervisor: Supervisor,
        retention: RetentionTask,
        tail: SharedTail,
    ) -> None:
        self._store = store
        self._owner = owner
        self._config = config
        self._live = live
        self._supervisor = supervisor
        self._retention = retention
        self._tail = tail

    async def release_all(self, began: float) -> None:
        """Stop every local run and write its checkpoint and release by ``stop_timeout``."""
        timeout = self._config.stop_timeout
        deadline = began + timeout
        await self._retention.stop()  # its deletes would compete with the final writes
        await self._supervisor.stop()
        await self._tail.stop()  # its streams end; their clients reconnect elsewhere
        runs = self._live.values()
        # Engines stop at once on release; the reserve is for the final write.
        engine_budget = max(0.0, timeout - min(1.0, timeout / 2))
        await asyncio.gather(*(run.stop_engine(engine_budget) for run in runs))
        try:
            remaining = max(deadline - time.monotonic(), 0.05)
            await asyncio.wait_for(self._write_release(), remaining)
        except asyncio.TimeoutError:
            logger.warning(
                "shutdown could not write everything within stop_timeout (%ss); "
                "runs resume from their last written checkpoint",
                timeout,
            )
        except StoreUnavailableError as exc:
            logger.warning(
                "shutdown could not write everything (store unavailable: %s); "
                "runs resume from their last written checkpoint",
                exc,
            )

    async def _write_release(self) -> None:
        await self._live.writer.drain()
        await self._store.release_handlers(self._owner.id, None)
