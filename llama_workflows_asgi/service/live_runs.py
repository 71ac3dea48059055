"""The runs executing in this process: the one place that answers "is this run live here?".

A run is live here from the moment it is registered (before its row is
written, so that an ownership round never takes it for an orphan) until it is
unregistered: its end or release is written (retired), this process lost it,
or it never started. The set also writes the runs' progress (through its
``ProgressWriter``, which retires or loses them once written), releases runs
that sat idle for ``idle_timeout``, and keeps the background tasks of its runs.

With ``max_live_runs`` it also keeps the count of room left: live runs and
slots reserved by a claim in flight (so that a start and a claim never both
take the last slot), and an event set whenever a run leaves, so that the
ownership rounds claim the next waiting run at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from ..errors import ConflictError
from ..registry import RegisteredWorkflow
from ..store.base import AbstractWorkflowStore, PersistentHandler
from .config import ServiceConfig
from .ended_logs import EndedLogs
from .live import LiveRun
from .ownership import Owner
from .runtime import DurableRuntime
from .writer import ProgressWriter

logger = logging.getLogger(__name__)


class LiveRuns:
    """The live runs of one service, by handler id, with their writer and background tasks."""

    def __init__(
        self,
        store: AbstractWorkflowStore,
        owner: Owner,
        config: ServiceConfig,
        runtime: DurableRuntime,
    ) -> None:
        self._checkpoints = store.durable
        self._config = config
        self._runtime = runtime
        self.by_handler: dict[str, LiveRun] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self._reserved = 0
        self._queued_meanwhile = False
        self.room_freed = asyncio.Event()
        """Set when a run leaves while ``max_live_runs`` bounds this process."""
        self.releases_idle = False  # idle runs are released only while the service runs
        self.writer = ProgressWriter(store, owner.id, delay=config.checkpoint_delay, runs=self)
        self.ended = EndedLogs()
        """The written events of the runs that ended here last (for streams opened late)."""

    def __contains__(self, handler_id: object) -> bool:
        return handler_id in self.by_handler

    def __iter__(self) -> Iterator[LiveRun]:
        return iter(list(self.by_handler.values()))

    def __len__(self) -> int:
        return len(self.by_handler)

    def values(self) -> list[LiveRun]:
        """The live runs, as a list that later registrations do not change."""
        return list(self.by_handler.values())

    def room(self) -> int | None:
        """How many more runs may be live here (``None``: no bound)."""
        bound = self._config.max_live_runs
        if bound is None:
            return None
        return max(0, bound - len(self.by_handler) - self._reserved)

    def is_full(self) -> bool:
        """Whether ``max_live_runs`` runs are live (or reserved) here."""
        return self.room() == 0

    @contextmanager
    def reserving(self, slots: int) -> Iterator[None]:
        """Hold ``slots`` of room while a claim is written and its runs registered."""
        self._reserved += slots
        try:
            yield
        finally:
            self._reserved -= slots
            if self._queued_meanwhile and self._reserved == 0:
                # A start queued its run because of this reservation; if the
                # claim left room, the run is claimed now, not a round later.
                self._queued_meanwhile = False
                if not self.is_full():
                    self.room_freed.set()

    def queued(self) -> None:
        """A start wrote its run unowned because this process was full."""
        if self._reserved:
            self._queued_meanwhile = True

    def get(self, handler_id: str) -> LiveRun | None:
        """The live run of ``handler_id``, or ``None`` when it does not execute here."""
        return self.by_handler.get(handler_id)

    def of_run(self, handler_id: str, run_id: str | None) -> LiveRun | None:
        """The live run of ``handler_id`` if it is that handler's run ``run_id``."""
        live = self.by_handler.get(handler_id)
        return live if live is not None and live.run_id == run_id else None

    def attached(self, handler_id: str, run_id: str | None) -> LiveRun | None:
        """The live run ``run_id`` of ``handler_id`` if its engine runs and it is not releasing."""
        live = self.of_run(handler_id, run_id)
        if live is None or live.handler is None or live.releasing:
            return None
        return live

    def find_run(self, run_id: str) -> LiveRun | None:
        """The live run with run id ``run_id``, whatever its handler."""
        for live in self.by_handler.values():
            if live.run_id == run_id:
                return live
        return None

    def register(
        self, row: PersistentHandler, entry: RegisteredWorkflow, next_sequence: int
    ) -> LiveRun:
        """Make ``row``'s run live here; ``ConflictError`` if its handler already is."""
        assert row.run_id is not None
        if row.handler_id in self.by_handler:
            raise ConflictError(f"Handler '{row.handler_id}' is already running")
        live = LiveRun(
            row,
            workflow=entry,
            serializer=self._runtime.get_serializer(entry.workflow),
            next_sequence=next_sequence,
            on_dirty=self.writer.mark,
            on_idle=self.schedule_idle_release,
            checkpoints=self._checkpoints,
        )
        live.idle_since = row.idle_since
        self.by_handler[row.handler_id] = live
        return live

    def unregister(self, live: LiveRun) -> None:
        """Forget ``live`` here (its engine observer, idle timer and telemetry span too)."""
        if self.by_handler.get(live.handler_id) is live:
            del self.by_handler[live.handler_id]
            if self._config.max_live_runs is not None:
                self.room_freed.set()
        if live.idle_timer is not None:
            live.idle_timer.cancel()  # it would keep the finished run alive until it fires
        self._runtime.forget(live.run_id, live)
        if live.handler is not None:  # it ran here (not a refused or failed start)
            live.telemetry.ended(*_ending(live))

    def is_current(self, live: LiveRun) -> bool:
        """Whether ``live`` is still the live run of its handler."""
        return self.by_handler.get(live.handler_id) is live

    def lose(self, live: LiveRun) -> None:
        """Stop a run this process no longer owns, writing nothing more for it."""
        live.abort()
        live.finished.set()
        self.unregister(live)

    def retire(self, live: LiveRun) -> None:
        """Forget a run whose end (or release) is written.

        A completed or cancelled run's tail stays for the streams that open late.
        """
        live.abort()
        self.unregister(live)
        if live.final is not None:
            self.ended.keep(live.run_id, live.final.status, live.tail)

    def clear(self) -> None:
        """Cancel the background tasks and forget every run (the service has stopped)."""
        for task in list(self.background):
            task.cancel()
        self.by_handler.clear()

    def stop_all_now(self) -> None:
        """Stop every engine at once, writing nothing: others may be resuming these runs."""
        for run in self:
            if not run.releasing and not run.finished.is_set():
                self.spawn(run.stop_engine(0))

    def schedule_idle_release(self, live: LiveRun) -> None:
        """Release ``live`` after ``idle_timeout`` unless it does something meanwhile."""
        timeout = self._config.idle_timeout
        if timeout is None or not self.releases_idle:
            return
        if live.idle_timer is not None:
            live.idle_timer.cancel()
        loop = asyncio.get_running_loop()
        live.idle_timer = loop.call_later(
            timeout, self._release_if_still_idle, live, live.idle_since
        )

    def _release_if_still_idle(self, live: LiveRun, marker: datetime | None) -> None:
        if self.is_current(live) and live.idle_since == marker and not live.releasing:
            self.spawn(live.stop_engine(self._config.stop_timeout))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, logging its failure; cancelled on :meth:`clear`."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background work of a run failed", exc_info=task.exception())


def _ending(live: LiveRun) -> tuple[str, str | None]:
    """How a run stopped executing here: its written outcome, released, or lost."""
    if live.final is not None:
        return live.final.status, live.final.error
    return ("released" if live.releasing else "lost"), None
