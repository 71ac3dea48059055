"""The group commit: one task writes every dirty run's progress in one batch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .. import telemetry
from ..errors import StoreUnavailableError
from ..store.base import AbstractWorkflowStore, RunProgress, utcnow
from .live import LiveRun

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 5.0


class ProgressWriter:
    """Collects dirty runs and writes their progress, one store call per round.

    While a write is in flight, runs keep getting dirty; the next round picks all
    of them up at once, so the number of transactions stays flat as load grows.
    A failed write keeps everything for the next round (with backoff): nothing a
    run produced is dropped while the database is away.
    """

    def __init__(
        self,
        store: AbstractWorkflowStore,
        owner_id: str,
        *,
        delay: float,
        on_lost: Callable[[LiveRun], None],
        on_settled: Callable[[LiveRun], None],
    ) -> None:
        self._store = store
        self._owner_id = owner_id
        self._delay = delay
        self._on_lost = on_lost
        self._on_settled = on_settled
        self._dirty: dict[LiveRun, None] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.last_error: BaseException | None = None
        # Monotonic times of the oldest mark not yet taken by a round, and of
        # the oldest mark in the round being written (the backlog's age).
        self._marked_since: float | None = None
        self._writing_since: float | None = None

    def mark(self, run: LiveRun) -> None:
        """Schedule ``run``'s progress for the next round."""
        self._dirty[run] = None
        if self._marked_since is None:
            self._marked_since = time.monotonic()
        self._idle.clear()
        self._wake.set()

    @property
    def unwritten_since(self) -> float | None:
        """Monotonic time of the oldest progress not yet written, ``None`` if all is."""
        times = [t for t in (self._writing_since, self._marked_since) if t is not None]
        return min(times, default=None)

    def start(self) -> None:
        """Start the writing task."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="workflow-progress-writer")

    async def drain(self) -> None:
        """Wait until everything marked so far has been written."""
        while self._dirty or not self._idle.is_set():
            self._wake.set()
            await self._idle.wait()
            await asyncio.sleep(0)

    async def stop(self) -> None:
        """Stop the task (after :meth:`drain`, if pending work matters)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        backoff = 0.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._delay:
                await asyncio.sleep(self._delay)
            written = await self._round()
            backoff = 0.0 if written else min(max(backoff * 2, 0.05), _MAX_BACKOFF)
            if backoff:
                await asyncio.sleep(backoff)
                self._wake.set()
            elif not self._dirty:
                self._idle.set()

    async def _round(self) -> bool:
        runs, self._dirty = list(self._dirty), {}
        self._writing_since, self._marked_since = self._marked_since, None
        try:
            return await self._write(runs)
        finally:
            self._writing_since = None

    async def _write(self, runs: list[LiveRun]) -> bool:
        now = utcnow()
        batch: list[tuple[LiveRun, RunProgress]] = []
        for run in runs:
            progress = run.collect(self._owner_id, now)
            if progress is not None:
                batch.append((run, progress))
        if not batch:
            return True
        began = time.monotonic()
        try:
            lost = await self._store.save_progress([p for _, p in batch])
        except Exception as exc:
            telemetry.failed_batch()
            self._keep(batch, exc)
            return False
        telemetry.batch_written(len(batch), time.monotonic() - began)
        self.last_error = None
        for run, progress in batch:
            if run.handler_id in lost:
                self._on_lost(run)
                continue
            run.acknowledge(progress)
            if run.settled:
                self._on_settled(run)
        return True

    def _keep(self, batch: list[tuple[LiveRun, RunProgress]], exc: BaseException) -> None:
        if not isinstance(exc, StoreUnavailableError):
            logger.exception("writing run progress failed; retrying", exc_info=exc)
        elif self.last_error is None:
            logger.warning("store unavailable, progress kept in memory: %s", exc)
        self.last_error = exc
        since = self._writing_since
        for run, progress in batch:
            run.requeue(progress)
        if since is not None:  # requeued progress keeps its age
            self._marked_since = min(since, self._marked_since or since)
