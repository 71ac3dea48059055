"""A run executing in this process, and what it has not yet written."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workflows.context.serializers import BaseSerializer
from workflows.context.state_store import StateStore
from workflows.events import (
    Event,
    IdleReleasedEvent,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowIdleEvent,
    WorkflowTimedOutEvent,
)
from workflows.handler import WorkflowHandler

from .. import _engine, codec
from .._engine import (
    BrokerState,
    ExternalRunAdapter,
    StepId,
    StepWorkerFailed,
    TickAddEvent,
    TickIdleRelease,
    TickStepResult,
    TickTimeout,
    WorkflowTick,
)
from .._json import dumps
from ..registry import RegisteredWorkflow
from ..store import state
from ..store.base import PersistentHandler, RunProgress, Status, StoredEvent, utcnow
from ..telemetry import RunTelemetry
from .runtime import RunLoop

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a run ended: its status, and its result envelope or error text."""

    status: Status
    result: str | None = None
    error: str | None = None
    event: StopEvent | None = None


def outcome_of(event: StopEvent, payload: str) -> Outcome:
    """The outcome a terminal event stands for."""
    if isinstance(event, WorkflowCancelledEvent):
        return Outcome("cancelled")
    if isinstance(event, WorkflowFailedEvent):
        return Outcome("failed", error=_storable(str(event.exception)))
    if isinstance(event, WorkflowTimedOutEvent):
        return Outcome("failed", error=f"Workflow timed out after {float(event.timeout)}s")
    return Outcome("completed", result=payload, event=event)


def _may_fail_run(tick: WorkflowTick) -> bool:
    """Whether reducing ``tick`` can fail the run: a step raised, or the run timed out.

    A run that fails stops at that tick, so a later tick means it did not.
    """
    if isinstance(tick, TickTimeout):
        return True
    return isinstance(tick, TickStepResult) and any(
        isinstance(result, StepWorkerFailed) for result in tick.result
    )


def _storable(text: str) -> str:
    """``text`` without what no database column takes: NUL, unpaired surrogates."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


@dataclass
class _Pending:
    """Writes accumulated since the last group commit."""

    events: list[StoredEvent] = field(default_factory=list)
    consumed_inbox: list[int] = field(default_factory=list)
    state_changed: bool = True
    progressed: bool = False


class LiveRun:
    """One run executing here: its engine handler, checkpoint and unwritten events.

    The engine reports ticks, streamed events and state edits (see
    ``runtime.RunObserver``); each report marks the run dirty and the service's
    writer later calls :meth:`collect`, which turns everything since the last
    write into one ``RunProgress`` (including a fresh checkpoint computed from a
    mirror of the control loop's state, so taking it never replays history).
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
        assert row.run_id is not None
        self.row = row.model_copy(update={"ctx": None})
        self.handler_id = row.handler_id
        self.run_id = row.run_id
        self.workflow = workflow
        self.final: PersistentHandler | None = None
        self._serializer = serializer
        self._next_sequence = next_sequence
        self._on_dirty = on_dirty
        self._on_idle = on_idle
        self._checkpoints = checkpoints
        self.handler: WorkflowHandler | None = None
        self._adapter: ExternalRunAdapter | None = None
        self._loop: RunLoop | None = None
        # The loop's state after the latest observed tick, the one before a tick
        # that may fail the run, and the one the latest checkpoint was taken of.
        self._seen: BrokerState | None = None
        self._before_failure: BrokerState | None = None
        self._checkpointed: BrokerState | None = None
        self._state_store: StateStore[Any] | None = None
        self._pending = _Pending()
        self._inflight: RunProgress | None = None
        self._inbox_by_event: dict[int, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.delivered: set[int] = set()
        self.idle_since: datetime | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.outcome: Outcome | None = None
        self.releasing = False
        self._engine_stopped = False
        # Set when something the run produced cannot be saved: the run fails
        # here, and nothing the engine reports afterwards is recorded.
        self._failed_here = False
        self._ctx_broken = False
        self.poisoned = False
        self.durable_sequence = next_sequence - 1
        self.tail: deque[StoredEvent] = deque(maxlen=tail_size)
        self._changed = asyncio.Event()
        self.finished = asyncio.Event()
        self.telemetry = RunTelemetry(row)  # the service replaces it with a reporting one

    # -- wiring ----------------------------------------------------------------------

    def attach(self, handler: WorkflowHandler, adapter: ExternalRunAdapter, loop: RunLoop) -> None:
        """Bind the engine's handler, adapter and control loop once the run has been started."""
        self.handler = handler
        self._adapter = adapter
        self._loop = loop
        self._seen = _engine.initial_state(adapter)
        self._state_store = adapter.get_state_store(())

    # -- engine reports (runtime.RunObserver) ----------------------------------------

    def observe_tick(self, tick: WorkflowTick) -> None:
        # The loop reduced ``tick`` just before reporting it: its state is the
        # one after it, and the one seen at the previous tick is the one before.
        self._before_failure = self._seen if _may_fail_run(tick) else None
        if self._loop is not None:
            self._seen = self._loop.state or self._seen
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
            # Called from the engine's control loop or a step's background
            # task, where raising would be swallowed: fail the run instead.
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

    def _append(self, encoded: codec.EncodedEvent) -> StoredEvent:
        stored = StoredEvent(
            self._next_sequence,
            encoded.payload,
            encoded.event_type,
            encoded.internal,
            encoded.terminal,
            utcnow(),
        )
        self._next_sequence += 1
        self._pending.events.append(stored)
        return stored

    def fail(self, reason: str) -> None:
        """End the run here as ``failed``: something it produced cannot be saved.

        The engine is stopped at once (nothing it does next could be saved
        either); the failure event ends the run's stream and ``reason`` becomes
        its ``error``. A run that already has an outcome keeps it.
        """
        if self._failed_here or self.outcome is not None:
            return
        reason = _storable(reason)
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
        self._pending = _Pending(state_changed=False)
        self._next_sequence = self.durable_sequence + 1
        self._ctx_broken = True
        self._failed_here = False
        self.outcome = None
        self.fail(reason)

    def observe_state_change(self) -> None:
        self._pending.state_changed = True
        self._mark()

    def track_task(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _mark(self) -> None:
        ticked = self._seen is not self._checkpointed  # a tick since the last checkpoint
        self._pending.state_changed = self._pending.state_changed or ticked
        self._on_dirty(self)

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
        self.track_task(asyncio.ensure_future(self._adapter.send_event(tick)))

    def drop_inbox_entry(self, inbox_id: int) -> None:
        """Consume an inbox entry that cannot be delivered (it is logged by the caller)."""
        self.delivered.add(inbox_id)
        self._pending.consumed_inbox.append(inbox_id)
        self._mark()

    # -- group commit -------------------------------------------------------------------

    def collect(self, owner_id: str | None, now: datetime) -> RunProgress | None:
        """Everything to write since the last write, or ``None`` if nothing changed."""
        if self._inflight is not None or self.handler is None:
            return None
        pending, terminal = self._pending, self.outcome is not None
        release = self.releasing and self._engine_stopped and not terminal
        wants_ctx = pending.state_changed and (self._checkpoints or terminal or release)
        if not (wants_ctx or pending.events or pending.consumed_inbox or terminal or release):
            return None
        self._pending = _Pending(state_changed=False)
        ctx = self._checkpoint_or_fail(pending) if wants_ctx and not self._ctx_broken else None
        # A failed checkpoint fails the run, adding the failure to this write.
        pending.events.extend(self._pending.events)
        self._pending.events.clear()
        outcome = self.outcome or Outcome("running")
        self._inflight = RunProgress(
            handler_id=self.handler_id,
            run_id=self.run_id,
            owner_id=owner_id,
            updated_at=now,
            ctx=ctx,
            events=pending.events,
            consumed_inbox=pending.consumed_inbox,
            status=outcome.status,
            result=outcome.result,
            error=outcome.error,
            idle_since=None if outcome.status != "running" else self.idle_since,
            reset_attempts=pending.progressed,
            release=release and outcome.status == "running",
        )
        return self._inflight

    def _checkpoint_or_fail(self, pending: _Pending) -> str | None:
        """A checkpoint; if the run's context cannot be serialized, fail the run (no ctx).

        A run that has just ended fails all the same (its end is in ``pending``,
        not written yet): what it leaves behind could not be saved.
        """
        try:
            return self.checkpoint()
        except Exception as exc:
            self._ctx_broken = True  # the last checkpoint written stays the run's ctx
            if self.outcome is not None and not self._failed_here:
                ended = [e for e in pending.events if e.terminal]
                pending.events = [e for e in pending.events if not e.terminal]
                self._next_sequence = min((e.sequence for e in ended), default=self._next_sequence)
                self.outcome = None
            self.fail(f"The run's state cannot be checkpointed: {codec.readable_error(exc)}")
            return None

    def checkpoint(self) -> str:
        """The run's context as ``Context.to_dict()`` JSON, read from the loop's own state.

        Taking it costs the size of the current state, never the run's history:
        the state is the control loop's, as it left it after its latest tick.
        """
        assert self._seen is not None
        state = self._checkpointed = self._seen
        if self._before_failure is not None and self.outcome and self.outcome.status == "failed":
            # A failed run keeps the state from before the failing step's result
            # (that step still in progress), so a retry runs it again from there.
            state = self._before_failure
        serialized = state.to_serialized(self._serializer)
        if self._state_store is not None:
            serialized.state = self._state_store.to_dict(self._serializer)
        return dumps(serialized.model_dump(mode="json"))

    def acknowledge(self, progress: RunProgress) -> None:
        """The progress was written: publish its events to streams."""
        self._inflight = None
        if progress.reset_attempts:
            # The store reset the counter with this write: keep the row in step.
            self.row.resume_attempts = 0
        if progress.events:
            self.durable_sequence = progress.events[-1].sequence
            self.tail.extend(progress.events)
        if progress.status != "running":
            self.final = self._finished_row(progress)
        if progress.status != "running" or progress.release:
            self.finished.set()
        self._notify()

    def _finished_row(self, progress: RunProgress) -> PersistentHandler:
        """The handler row as the terminal write left it."""
        ended = state.finished(
            progress.status, result=None, error=progress.error, at=progress.updated_at
        )
        result = None if self.outcome is None else self.outcome.event
        return self.row.model_copy(update={**ended, "result": result})

    def requeue(self, progress: RunProgress) -> None:
        """Writing failed: keep everything for the next attempt."""
        self._inflight = None
        pending = self._pending
        pending.events[:0] = progress.events
        pending.consumed_inbox[:0] = progress.consumed_inbox
        pending.state_changed = pending.state_changed or progress.ctx is not None
        pending.progressed = pending.progressed or progress.reset_attempts
        self._on_dirty(self)

    @property
    def settled(self) -> bool:
        """Whether the run has nothing left to write and has ended or been released here."""
        return self.finished.is_set() and self._inflight is None

    # -- streams -----------------------------------------------------------------------

    async def wait_changed(self, timeout: float) -> None:
        """Wait until new events are written (or the run is settled), at most ``timeout``."""
        if self.finished.is_set():
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

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
