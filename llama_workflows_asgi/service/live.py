"""A run executing in this process: what the engine reports, events sent in, failing, stopping.

``LiveRun`` binds one run's engine handler, adapter and control loop. What it
has produced and not yet written, and the group commit of it, are its base
``progress.RunJournal``; its checkpoint is taken from a ``checkpoint.StateMirror``
of the loop; how it ended is an ``outcome.Outcome``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from workflows.context.serializers import BaseSerializer
from workflows.events import (
    Event,
    IdleReleasedEvent,
    StartEvent,
    StopEvent,
    WorkflowFailedEvent,
    WorkflowIdleEvent,
)
from workflows.handler import WorkflowHandler

from .. import _engine, codec
from .._engine import (
    ExternalRunAdapter,
    StepId,
    TickAddEvent,
    TickIdleRelease,
    TickPublishEvent,
    TickSessionStart,
    TickStepResult,
    WorkflowTick,
)
from ..registry import RegisteredWorkflow
from ..store.base import PersistentHandler
from ..telemetry import RunTelemetry
from .checkpoint import StateMirror
from .outcome import Outcome, outcome_of, storable
from .progress import Pending, RunJournal
from .runtime import RunLoop

logger = logging.getLogger(__name__)


class LiveRun(RunJournal):
    """One run executing here: its engine handler, checkpoint and unwritten events.

    The engine reports ticks, streamed events and state edits (see
    ``runtime.RunObserver``); each report marks the run dirty and the service's
    writer later calls :meth:`collect`, which turns everything since the last
    write into one ``RunProgress`` (including a fresh checkpoint computed from a
    mirror of the control loop's state, see ``checkpoint.py``).
    Events become visible to streams only once written (:meth:`acknowledge`).
    """

    def __init__(
        self,
        row: PersistentHandler,
        *,
        workflow: RegisteredWorkflow,
        serializer: BaseSerializer,
        next_sequence: int,
        on_dirty: Callable[[LiveRun], None],
        on_idle: Callable[[LiveRun], None],
        checkpoints: bool,
        tail_size: int = 256,
    ) -> None:
        super().__init__(
            row, next_sequence=next_sequence, checkpoints=checkpoints, tail_size=tail_size
        )
        self.workflow = workflow
        self._on_dirty = on_dirty
        self._on_idle = on_idle
        self.handler: WorkflowHandler | None = None
        self._adapter: ExternalRunAdapter | None = None
        self._state = StateMirror(serializer)
        self._inbox_by_event: dict[int, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.delivered: set[int] = set()
        self.idle_timer: asyncio.TimerHandle | None = None
        self.poisoned = False
        self.telemetry = RunTelemetry(row)  # the service replaces it with a reporting one

    # -- wiring ----------------------------------------------------------------------

    def attach(self, handler: WorkflowHandler, adapter: ExternalRunAdapter, loop: RunLoop) -> None:
        """Bind the engine's handler, adapter and control loop once the run has been started."""
        self.handler = handler
        self._adapter = adapter
        self._state.attach(adapter, loop)
        if not (self._row_has_ctx or self._state.starts_empty):
            # A fresh state of a typed model may hold generated defaults (an id,
            # a time): rebuilt from a row without it, they would differ.
            self.redone_by_resume = False

    # -- engine reports (runtime.RunObserver) ----------------------------------------

    def observe_tick(self, tick: WorkflowTick) -> None:
        self._state.observe_tick(tick)
        if self.redone_by_resume and not _redone_by_resume(tick):
            self.redone_by_resume = False
        if isinstance(tick, TickAddEvent):
            inbox_id = self._inbox_by_event.pop(id(tick.event), None)
            if inbox_id is not None:
                self._pending.consumed_inbox.append(inbox_id)
                self.idle_since = None
        elif isinstance(tick, TickStepResult):
            self._pending.progressed = True
            self.idle_since = None
        self._mark()

    def observe_event(self, event: Event) -> None:
        if isinstance(event, IdleReleasedEvent) or self._failed_here:
            return
        try:
            encoded = codec.encode(event)
        except codec.SerializationError as exc:
            # Called from the engine's control loop or from a step writing the
            # event, where raising would be swallowed or taken for the step's
            # own error: fail the run instead.
            what = "result" if isinstance(event, StopEvent) else f"event {type(event).__name__}"
            reason = codec.readable_error(exc.__cause__ or exc)
            self.fail(f"The run's {what} cannot be serialized: {reason}")
            return
        stored = self._append(encoded)
        if isinstance(event, StopEvent) and self.outcome is None:
            self.outcome = outcome_of(event, encoded.payload)
        elif isinstance(event, WorkflowIdleEvent):
            self.idle_since = stored.created_at
            self._on_idle(self)
        self._mark()

    def observe_interrupt(self, exc: BaseException) -> None:
        self.fail(
            f"A step raised {type(exc).__name__}, which stops the run"
            + (f": {codec.readable_error(exc)}" if str(exc) else "")
        )

    def fail(self, reason: str) -> None:
        """End the run here as ``failed``: something it produced cannot be saved.

        The engine is stopped at once (nothing it does next could be saved
        either); the failure event ends the run's stream and ``reason`` becomes
        its ``error``. A run that already has an outcome keeps it.
        """
        if self._failed_here or self.outcome is not None:
            return
        reason = storable(reason)
        logger.warning("run %s failed: %s", self.run_id, reason)
        failure = WorkflowFailedEvent(step_name="", exception=RuntimeError(reason))
        self._append(codec.encode(failure))
        self.outcome = Outcome("failed", error=reason)
        self._failed_here = True
        self.abort()
        self._mark()

    def poison(self, reason: str) -> None:
        """Its progress cannot be written: drop it and fail the run with ``reason`` alone.

        Everything not yet written is discarded (the store refused it), so the
        next write carries only the failure: no checkpoint, no other event.
        """
        self.poisoned = True
        self._inflight = None
        self._pending = Pending(state_changed=False)
        self._next_sequence = self.durable_sequence + 1
        self._ctx_broken = True
        self._failed_here = False
        self.outcome = None
        self.fail(reason)

    def observe_state_change(self) -> None:
        self.redone_by_resume = False
        self._pending.state_changed = True
        self._mark()

    def track_task(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)

    def task_ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)

    def _mark(self) -> None:
        self._pending.state_changed = self._pending.state_changed or self._state.ticked
        told = self._told_ended
        if told is None or (not told and self.outcome is not None):
            self._dirty()

    # -- events sent in ---------------------------------------------------------------

    def deliver(self, inbox_id: int, event: Event, step: str | None) -> None:
        """Hand an inbox entry to the engine; it is consumed when its tick is reduced."""
        assert self.handler is not None
        self.delivered.add(inbox_id)
        self._inbox_by_event[id(event)] = inbox_id
        if step is None or _engine.step_accepts(self.workflow.workflow, step, event):
            self.handler.ctx.send_event(event, step)
            return
        # The step takes the event through ctx.wait_for_event, not its signature:
        # the engine's send_event refuses that, its control loop does not.
        assert self._adapter is not None
        tick = TickAddEvent(event=event, step_id=StepId.root(step))
        task = asyncio.ensure_future(self._adapter.send_event(tick))
        self.track_task(task)
        task.add_done_callback(self.task_ended)

    def drop_inbox_entry(self, inbox_id: int) -> None:
        """Consume an inbox entry that cannot be delivered (it is logged by the caller)."""
        self.delivered.add(inbox_id)
        self._pending.consumed_inbox.append(inbox_id)
        self._mark()

    # -- what the journal asks of it (progress.RunJournal) ---------------------------

    @property
    def _started(self) -> bool:
        return self.handler is not None

    def _dirty(self) -> None:
        self._told_ended = self.outcome is not None
        self._on_dirty(self)

    def checkpoint(self) -> str:
        """The run's context as ``Context.to_dict()`` JSON, read from the loop's own state.

        Taking it costs the size of the current state, never the run's history
        (see :class:`.checkpoint.StateMirror`).
        """
        failed = self.outcome is not None and self.outcome.status == "failed"
        return self._state.checkpoint(failed=failed)

    # -- stopping ------------------------------------------------------------------------

    async def stop_engine(self, timeout: float) -> None:
        """Stop executing here, leaving in-flight steps to be re-run from the checkpoint."""
        self.releasing = True
        handler = self.handler
        try:
            if self._adapter is not None and handler is not None and not handler.is_done():
                await self._adapter.send_event(TickIdleRelease())
                result = asyncio.ensure_future(handler.stop_event_result())
                done, _ = await asyncio.wait({result}, timeout=timeout)
                if not done:
                    result.cancel()
                elif not result.cancelled() and result.exception() is not None:
                    logger.debug("run %s stopped with %r", self.run_id, result.exception())
        finally:
            # Whatever happened, the release must be written, or the run would
            # stay owned here and never resume.
            self.abort()
            self._engine_stopped = True
            self._mark()

    def abort(self) -> None:
        """Stop the engine at once: cancel the control loop and every step task."""
        if self._adapter is not None:
            _engine.abort(self._adapter)
        for task in list(self._tasks):
            task.cancel()
        self._notify()


def _redone_by_resume(tick: WorkflowTick) -> bool:
    """Whether resuming a run that reduced nothing but such ticks redoes them the same way.

    A session starting and the start event arriving are what a run does
    before any step returns, and again when it is resumed from the row as it
    was written at its launch; so is a published event (the engine reduces
    it without changing what the run waits for).
    """
    if isinstance(tick, TickAddEvent):
        return isinstance(tick.event, StartEvent)
    return isinstance(tick, (TickSessionStart, TickPublishEvent))
