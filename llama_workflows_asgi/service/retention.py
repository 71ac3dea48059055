"""Retention: a background task deleting old finished runs every few minutes."""

from __future__ import annotations

import asyncio
import logging

from ..store.base import AbstractWorkflowStore
from .config import ServiceConfig

logger = logging.getLogger(__name__)


class RetentionTask:
    """Prunes finished runs past their retention (``ServiceConfig.retention*``).

    A round runs at start and then every ``retention_interval`` seconds; it
    calls ``store.prune(exclusive=True)`` once per retention period, so when
    several replicas share a database only one deletes at a time and the
    others skip the round. A failed round is logged and retried next time.
    """

    def __init__(self, store: AbstractWorkflowStore, config: ServiceConfig) -> None:
        self._store = store
        self._config = config
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # finished rounds, for tests and diagnostics
        self.deleted = 0  # runs deleted since start

    @property
    def enabled(self) -> bool:
        """Whether any status has a retention period."""
        return bool(self._config.retention_groups())

    def start(self) -> None:
        """Start the rounds (nothing to do when every run is kept)."""
        if self._task is None and self.enabled:
            self._task = asyncio.create_task(self._loop(), name="workflow-retention")

    async def stop(self) -> None:
        """Stop the rounds; a batch in progress is rolled back."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run_once(self) -> int:
        """One round: prune every status past its retention; return how many runs went."""
        deleted = 0
        for age, statuses in self._config.retention_groups():
            deleted += await self._store.prune(
                older_than=age,
                statuses=statuses,
                batch_size=self._config.retention_batch_size,
                exclusive=True,
                pause=self._config.retention_pause,
            )
        return deleted

    async def _loop(self) -> None:
        while True:
            try:
                deleted = await self.run_once()
            except Exception as exc:
                logger.warning(
                    "retention round failed (retried in %ss): %s",
                    self._config.retention_interval,
                    exc,
                )
            else:
                self.deleted += deleted
                if deleted:
                    logger.info("retention deleted %d finished runs", deleted)
            self.rounds += 1
            await asyncio.sleep(self._config.retention_interval)
