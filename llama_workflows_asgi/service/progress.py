"""What a live run has produced and not yet written, and the group commit that writes it.

The base of :class:`.live.LiveRun`, which feeds it what the engine reports:
events are numbered here and kept, with the inbox entries consumed, until the
service's writer calls :meth:`RunJournal.collect`, which turns everything since
the last write into one ``RunProgress`` (with a fresh checkpoint when the state
changed). Once written (:meth:`RunJournal.acknowledge`) the events become
visible to streams through the run's tail; a refused write is kept for the next
attempt (:meth:`RunJournal.requeue`). The run executing supplies its checkpoint,
failing it, and telling the writer it has something to write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from .. import codec
from ..store import state
from ..store.base import PersistentHandler, RunProgress, StoredEvent, utcnow
from .ended_logs import written_after
from .outcome import Outcome


@dataclass
class Pending:
    """Writes accumulated since the last group commit."""

    events: list[StoredEvent] = field(default_factory=list)
    consumed_inbox: list[int] = field(default_factory=list)
    state_changed: bool = True
    progressed: bool = False


class RunJournal:
    """A live run's unwritten progress, its write in flight, and what streams see of it."""

    def __init__(
        self,
        row: PersistentHandler,
        *,
        next_sequence: int,
        checkpoints: bool,
        tail_size: int,
    ) -> None:
        assert row.run_id is not None
        self.row = row.model_copy(update={"ctx": None})
        self.handler_id = row.handler_id
        self.run_id = row.run_id
        self.final: PersistentHandler | None = None
        self._next_sequence = next_sequence
        self._checkpoints = checkpoints
        self._pending = Pending()
        # What the writer was told since it last collected the run: nothing
        # (None), or that the run has (True) or has not (False) ended. It
        # collects a run once however often it is told, so it is told again
        # only when the run ended meanwhile (see ``ProgressWriter.mark``).
        self._told_ended: bool | None = None
        # Whether the run has done nothing yet that resuming it from its row as
        # written would not redo the same way: it has only started its steps
        # (no step has returned, no event came in, its state is untouched), and
        # its row rebuilds the state it started with. A checkpoint of it would
        # resume exactly as the row does, so none is taken until then
        # (``LiveRun`` clears it on the first such change).
        self.redone_by_resume = True
        self._row_has_ctx = row.ctx is not None
        self._inflight: RunProgress | None = None
        self.idle_since: datetime | None = None
        self.outcome: Outcome | None = None
        self.releasing = False
        self._engine_stopped = False
        # Set when something the run produced cannot be saved: the run fails
        # here, and nothing the engine reports afterwards is recorded.
        self._failed_here = False
        self._ctx_broken = False
        self.durable_sequence = next_sequence - 1
        # The written events streams read from memory: the latest two writes
        # whole and at most ``tail_size`` before them (see ``_publish``).
        self.tail: deque[StoredEvent] = deque()
        self._tail_size = tail_size
        self._previous_write = 0
        self._changed = asyncio.Event()
        self.finished = asyncio.Event()

    # -- supplied by the run executing (live.LiveRun) ---------------------------------

    @property
    def _started(self) -> bool:
        """Whether the engine runs it (nothing is written before)."""
        raise NotImplementedError

    def _dirty(self) -> None:
        """Tell the writer the run has something to write."""
        raise NotImplementedError

    def checkpoint(self) -> str:
        """The run's context as ``Context.to_dict()`` JSON."""
        raise NotImplementedError

    def fail(self, reason: str) -> None:
        """End the run here as ``failed``: something it produced cannot be saved."""
        raise NotImplementedError

    # -- numbering ------------------------------------------------------------------------

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

    # -- group commit -------------------------------------------------------------------

    def collect(self, owner_id: str | None, now: datetime) -> RunProgress | None:
        """Everything to write since the last write, or ``None`` if nothing changed."""
        self._told_ended = None  # the writer took the run: what it produces next is news
        if self._inflight is not None or not self._started:
            return None
        pending, terminal = self._pending, self.outcome is not None
        release = self.releasing and self._engine_stopped and not terminal
        wants_ctx = pending.state_changed and (self._checkpoints or terminal or release)
        # A checkpoint the row as written would resume the same as: left for later.
        deferred = wants_ctx and self.redone_by_resume and not (terminal or release)
        wants_ctx = wants_ctx and not deferred
        if not (wants_ctx or pending.events or pending.consumed_inbox or terminal or release):
            return None
        self._pending = Pending(state_changed=deferred)
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

    def _checkpoint_or_fail(self, pending: Pending) -> str | None:
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

    def acknowledge(self, progress: RunProgress) -> None:
        """The progress was written: publish its events to streams."""
        self._inflight = None
        if progress.reset_attempts:
            # The store reset the counter with this write: keep the row in step.
            self.row.resume_attempts = 0
        if progress.events:
            self.durable_sequence = progress.events[-1].sequence
            self._publish(progress.events)
        if progress.status != "running":
            self.final = self._finished_row(progress)
        if progress.status != "running" or progress.release:
            self.finished.set()
        self._notify()

    def _publish(self, events: list[StoredEvent]) -> None:
        """Keep the written ``events`` in the tail, after the previous write and ``tail_size`` more.

        However long, the latest two writes stay whole: their streams read
        them from here instead of reading back from the store the rows just
        written (they were held in memory until now anyway), including a
        stream woken by the previous write that reads only after this one, and
        a stream that opens once a run's last event came in a write of its own.
        """
        tail = self.tail
        tail.extend(events)
        for _ in range(len(tail) - self._tail_size - len(events) - self._previous_write):
            tail.popleft()
        self._previous_write = len(events)

    def events_after(self, cursor: int) -> list[StoredEvent] | None:
        """The written events after ``cursor`` if the tail still holds them all, else ``None``."""
        return written_after(self.tail, self.durable_sequence, cursor)

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
        self._dirty()

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
