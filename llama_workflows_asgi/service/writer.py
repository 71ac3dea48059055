"""The service's side of the group commit: which runs are dirty, and what their writes did.

The writing itself is the store's (``store._batch``): its one writer task
pulls the dirty runs' progress from here each time it forms a batch, so
whatever runs produced while the previous batch was being written joins the
next one, coalesced per run. This module owns no queue and no task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from workflows.events import WorkflowFailedEvent

from .. import codec, telemetry
from ..errors import StoreUnavailableError
from ..store._batch import Poke, Result
from ..store.base import AbstractWorkflowStore, RunProgress, StoredEvent, utcnow
from .live import LiveRun

logger = logging.getLogger(__name__)


class LiveRunSet(Protocol):
    """Where the writer's runs live (``LiveRuns``): told when a run is lost or settled."""

    def __len__(self) -> int:
        """How many runs are live."""

    def lose(self, live: LiveRun) -> None:
        """This process no longer owns ``live`` (its write was fenced off, or failed for good)."""

    def retire(self, live: LiveRun) -> None:
        """``live``'s end or release is written: forget it."""


class ProgressWriter:
    """Collects dirty runs and hands their progress to the store's group commit.

    A failed write keeps everything for a later batch (the store backs off):
    nothing a run produced is dropped while the database is away. Failure is
    per run: the store re-runs a refused batch payload by payload, and a run
    whose own progress is refused (or cannot even be computed) fails alone,
    with only its failure written.
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
        self._dirty: dict[LiveRun, bool] = {}  # whether the run had ended when marked
        self._ended = 0  # dirty runs that had ended
        self._writing: dict[str, LiveRun] = {}  # taken by the store, not yet decided
        self._feed: Poke | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._failing: set[asyncio.Task[None]] = set()
        self.last_error: BaseException | None = None
        # Monotonic times of the oldest mark not yet taken, and of the oldest
        # mark in what the store is writing (the backlog's age).
        self._marked_since: float | None = None
        self._writing_since: float | None = None
        self._taken_at = 0.0
        self._unwritten_runs = 0

    def mark(self, run: LiveRun) -> None:
        """Schedule ``run``'s progress for the next batch.

        Once every live run has ended and waits to be written, nothing more
        can join the batch: the store is told not to wait to coalesce.
        """
        ended, marked = run.outcome is not None, self._dirty.get(run)
        if marked is ended:
            return  # marked as it stands since the last batch: the store is due to pull it
        self._ended += ended - (marked is True)
        self._dirty[run] = ended
        if self._marked_since is None:
            self._marked_since = time.monotonic()
        self._idle.clear()
        if self._feed is not None:
            self._feed.poke(self._delay, complete=self._complete())

    def _complete(self) -> bool:
        """Whether every live run has ended and waits to be written (see :meth:`mark`)."""
        return 0 < self._ended >= len(self._runs)

    @property
    def unwritten_since(self) -> float | None:
        """Monotonic time of the oldest progress not yet written, ``None`` if all is."""
        return _earliest(self._writing_since, self._marked_since)

    def start(self) -> None:
        """Attach to the (started) store's group commit."""
        if self._feed is None:
            self._feed = self._store.progress_feed(self)
            if self._dirty:  # after a restart, pick up what was left
                self._feed.poke(complete=self._complete())

    def stalled_for(self) -> float:
        """Seconds the oldest unwritten progress has been waiting (0 when all is written)."""
        since = self.unwritten_since
        return 0.0 if since is None else time.monotonic() - since

    @property
    def unwritten_runs(self) -> int:
        """How many runs have progress waiting to be written."""
        waiting = self._dirty.keys() | set(self._writing.values())  # a run once, in both
        return max(len(waiting), self._unwritten_runs)

    async def drain(self) -> None:
        """Wait until everything marked so far has been written."""
        while True:
            if self._failing:
                await asyncio.gather(*self._failing, return_exceptions=True)
                continue
            if not (self._dirty or self._writing):
                return
            if self._feed is not None and self._dirty:
                self._feed.poke(complete=self._complete())
            self._idle.clear()
            await self._idle.wait()

    async def stop(self) -> None:
        """Detach from the store (after :meth:`drain`, if pending work matters)."""
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        self._writing.clear()
        self._idle.set()

    # -- the store's side (store._batch.Source) ---------------------------------------

    def take(self) -> Sequence[RunProgress]:
        """The dirty runs' progress, for the batch the store is forming."""
        runs, self._dirty, self._ended = list(self._dirty), {}, 0
        self._writing_since = _earliest(self._writing_since, self._marked_since)
        self._marked_since = None
        now, items = utcnow(), []
        for run in runs:
            progress = self._collect(run, now)
            if progress is not None:
                self._writing[progress.handler_id] = run
                items.append(progress)
        self._taken_at = time.monotonic()
        self._check_idle()
        return items

    def settled(self, results: Sequence[tuple[RunProgress, Result[bool]]]) -> None:
        """Publish what was written, lose what was fenced off, fail what was refused."""
        written = 0
        for progress, result in results:
            run = self._writing.pop(progress.handler_id, None)
            if run is None:
                continue
            if isinstance(result, Exception):
                telemetry.failed_batch()
                self._reject(run, progress, result)
            else:
                written += 1
                self._publish(run, progress, fenced_in=result)
        if written:
            telemetry.batch_written(written, time.monotonic() - self._taken_at)
            self.last_error = None
            self._unwritten_runs = 0
        self._check_idle()

    def kept(self, payloads: Sequence[RunProgress], error: StoreUnavailableError) -> None:
        """The store was away: keep everything for a later batch, with its age."""
        telemetry.failed_batch()
        if self.last_error is None:
            logger.warning("store unavailable, progress kept in memory: %s", error)
        self.last_error = error
        self._unwritten_runs = max(self._unwritten_runs, len(payloads))
        since = self._writing_since
        if since is not None:  # requeued progress keeps its age
            self._marked_since = min(since, self._marked_since or since)
        for progress in payloads:
            run = self._writing.pop(progress.handler_id, None)
            if run is not None:
                run.requeue(progress)
        self._check_idle()

    # -- per run ------------------------------------------------------------------------

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

    def _publish(self, run: LiveRun, progress: RunProgress, *, fenced_in: bool) -> None:
        try:
            if not fenced_in:
                self._runs.lose(run)
                return
            run.acknowledge(progress)
            if run.settled:
                self._runs.retire(run)
        except Exception:
            # A bug in one run's bookkeeping must not leave the rest of the
            # batch unacknowledged (and so never written again).
            logger.exception("publishing the progress of run %s failed", run.run_id)
            self._runs.lose(run)

    def _reject(self, run: LiveRun, progress: RunProgress, exc: Exception) -> None:
        """The store refused this run's progress (not an outage): fail the run alone."""
        reason = f"The run's progress cannot be saved: {codec.readable_error(exc)}"
        logger.error("writing the progress of run %s failed", run.run_id, exc_info=exc)
        if not run.poisoned:
            run.poison(reason)  # its next write carries only the failure
            return
        # Even the bare failure was refused: record it another way, stop here.
        task = asyncio.ensure_future(self._record_failure(run, reason))
        self._failing.add(task)
        task.add_done_callback(self._failing.discard)

    async def _record_failure(self, run: LiveRun, reason: str) -> None:
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
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._writing:
            self._writing_since = None
            if not self._dirty:
                self._idle.set()


def _earliest(first: float | None, second: float | None) -> float | None:
    """The earlier of two monotonic times, either of which may be unknown (``None``)."""
    if first is None or (second is not None and second < first):
        return second
    return first
