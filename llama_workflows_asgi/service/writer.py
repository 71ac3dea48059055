"""The group commit: one task writes every dirty run's progress in one batch."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Protocol

from workflows.events import WorkflowFailedEvent

from .. import codec, telemetry
from ..errors import StoreUnavailableError
from ..store.base import AbstractWorkflowStore, RunProgress, StoredEvent, utcnow
from .guard import start_guarded
from .live import LiveRun

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 5.0


class LiveRunSet(Protocol):
    """Where the writer's runs live (``LiveRuns``): told when a run is lost or settled."""

    def lose(self, live: LiveRun) -> None:
        """This process no longer owns ``live`` (its write was fenced off, or failed for good)."""

    def retire(self, live: LiveRun) -> None:
        """``live``'s end or release is written: forget it."""


class ProgressWriter:
    """Collects dirty runs and writes their progress, one store call per round.

    While a write is in flight, runs keep getting dirty; the next round picks all
    of them up at once, so the number of transactions stays flat as load grows.
    A failed write keeps everything for the next round (with backoff): nothing a
    run produced is dropped while the database is away.

    Failure is per run: a batch refused for another reason than an outage is
    written again run by run, and a run whose own progress is refused (or
    cannot even be computed) fails alone, with only its failure written.
    """

    def __init__(
        self,
        store: AbstractWorkflowStore,
        owner_id: str,
        *,
        delay: float,
        runs: LiveRunSet,
    ) -> None:
        self._store = store
        self._owner_id = owner_id
        self._delay = delay
        self._runs = runs
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
        self._unwritten_runs = 0

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
            self._task = start_guarded("workflow-progress-writer", self._loop, logger)

    def stalled_for(self) -> float:
        """Seconds the oldest unwritten progress has been waiting (0 when all is written)."""
        since = self.unwritten_since
        return 0.0 if since is None else time.monotonic() - since

    @property
    def unwritten_runs(self) -> int:
        """How many runs have progress waiting to be written."""
        return max(len(self._dirty), self._unwritten_runs)

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
        self._wake.set()  # after a restart, pick up what was left
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._delay:
                await asyncio.sleep(self._delay)
            written = await self._round()
            backoff = 0.0 if written else min(max(backoff * 2, 0.05), _MAX_BACKOFF)
            if written:
                self._unwritten_runs = 0
            if backoff:
                await asyncio.sleep(backoff)
                self._wake.set()
            elif not self._dirty:
                self._idle.set()

    async def _round(self) -> bool:
        runs, self._dirty = list(self._dirty), {}
        self._unwritten_runs = 0
        self._writing_since, self._marked_since = self._marked_since, None
        try:
            now = utcnow()
            batch: list[tuple[LiveRun, RunProgress]] = []
            for run in runs:
                progress = self._collect(run, now)
                if progress is not None:
                    batch.append((run, progress))
            return await self._write(batch) if batch else True
        finally:
            self._writing_since = None

    def _collect(self, run: LiveRun, now: datetime) -> RunProgress | None:
        try:
            return run.collect(self._owner_id, now)
        except Exception as exc:
            # A bug, not the run's data (LiveRun handles what does not
            # serialize): fail this run alone rather than stall every run.
            logger.exception("collecting the progress of run %s failed", run.run_id)
            if run.poisoned:
                self._runs.lose(run)
            else:
                run.poison(f"Internal error while saving the run: {codec.readable_error(exc)}")
            return None

    async def _write(self, batch: list[tuple[LiveRun, RunProgress]]) -> bool:
        began = time.monotonic()
        try:
            lost = await self._store.save_progress([p for _, p in batch])
        except StoreUnavailableError as exc:
            telemetry.failed_batch()
            self._keep(batch, exc)
            return False
        except Exception as exc:
            telemetry.failed_batch()
            if len(batch) == 1:
                await self._reject(*batch[0], exc)
                return True
            # Not an outage: most likely one run's data. Write each run alone,
            # so only the culprit fails.
            written = [await self._write([item]) for item in batch]
            return all(written)
        telemetry.batch_written(len(batch), time.monotonic() - began)
        self.last_error = None
        self._publish(batch, lost)
        return True

    def _publish(self, batch: list[tuple[LiveRun, RunProgress]], lost: set[str]) -> None:
        for run, progress in batch:
            try:
                if run.handler_id in lost:
                    self._runs.lose(run)
                    continue
                run.acknowledge(progress)
                if run.settled:
                    self._runs.retire(run)
            except Exception:
                # A bug in one run's bookkeeping must not leave the rest of the
                # batch unacknowledged (and so never written again).
                logger.exception("publishing the progress of run %s failed", run.run_id)
                self._runs.lose(run)

    async def _reject(self, run: LiveRun, progress: RunProgress, exc: Exception) -> None:
        """The store refused this run's progress (not an outage): fail the run alone."""
        reason = f"The run's progress cannot be saved: {codec.readable_error(exc)}"
        logger.error("writing the progress of run %s failed", run.run_id, exc_info=exc)
        if not run.poisoned:
            run.poison(reason)  # its next write carries only the failure
            return
        # Even the bare failure was refused: record it another way, stop here.
        failure = WorkflowFailedEvent(step_name="", exception=RuntimeError(reason))
        encoded = codec.encode(failure)
        event = StoredEvent(-1, encoded.payload, encoded.event_type, False, True)
        try:
            await self._store.finalize_handler(
                run.handler_id, status="failed", error=reason, event=event, at=utcnow()
            )
        except Exception:
            logger.exception("run %s could not be marked failed; it resumes later", run.run_id)
        self._runs.lose(run)

    def _keep(self, batch: list[tuple[LiveRun, RunProgress]], exc: BaseException) -> None:
        if self.last_error is None:
            logger.warning("store unavailable, progress kept in memory: %s", exc)
        self.last_error = exc
        self._unwritten_runs += len(batch)  # a split batch keeps run by run
        since = self._writing_since
        for run, progress in batch:
            run.requeue(progress)
        if since is not None:  # requeued progress keeps its age
            self._marked_since = min(since, self._marked_since or since)
