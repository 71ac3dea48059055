"""Reading a run's event log: where a stream starts, and what it is fed next.

Events of a run live here come from its in-memory tail (only what is already
written is shown), and so do those of a run that ended here a moment ago while
its tail is kept (``ended_logs``); events of any other run (executing
elsewhere, or released while it waits) come from the process's shared tail
(``tail``), which reads the store once per ``stream_poll_interval`` for all
such streams, and at once when a wakeup names the run. A stream follows its
run as it moves: from the shared tail to the live run when it starts executing
here, and back. A graceful stop ends every stream; its client reconnects from
its last event elsewhere.
"""

from __future__ import annotations

from typing import Literal

from ..errors import HandlerNotFoundError
from ..store.base import AbstractWorkflowStore, HandlerQuery, PersistentHandler, StoredEvent
from .config import ServiceConfig
from .live import LiveRun
from .live_runs import LiveRuns
from .stopping import StopSignal
from .streams import EventStream
from .tail import SharedTail, Watch


class EventReader:
    """Opens and feeds the event streams of handlers, live here or not."""

    def __init__(
        self,
        store: AbstractWorkflowStore,
        live: LiveRuns,
        config: ServiceConfig,
        stop: StopSignal,
        tail: SharedTail,
    ) -> None:
        self._store = store
        self._live = live
        self._config = config
        self._stop = stop
        self._tail = tail

    def row_of_live(
        self, handler_id: str, principal_in: list[str | None] | None
    ) -> PersistentHandler | None:
        """The row of ``handler_id`` if its run executes here and one of ``principal_in`` owns it.

        What a stream opens from (its run id, its caller) without a store read:
        while this process executes a run, neither changes here. A change made
        elsewhere (a cancel or a purge by another process) reaches this process
        through the store's wakeups or its next ownership round, which stop the
        run; until then its streams follow the run executing here, as the
        streams opened a moment earlier do. ``None`` otherwise (the store
        answers, a missing handler and another caller's alike).
        """
        live = self._live.get(handler_id)
        if live is None or self._live.attached(handler_id, live.run_id) is None:
            return None
        if principal_in is not None and live.row.principal not in principal_in:
            return None
        return live.row

    async def open(
        self,
        row: PersistentHandler,
        *,
        after: int | Literal["now"],
        include_internal: bool,
    ) -> EventStream | None:
        """A stream of ``row``'s written events after ``after`` (``None``: nothing is left)."""
        if row.run_id is None:
            raise HandlerNotFoundError(row.handler_id)
        cursor = await self._last_sequence(row.run_id) if after == "now" else after
        first = await self._events_after(row.handler_id, row.run_id, cursor)
        if not first and row.is_terminal:
            return None
        feed = _Feed(self, row.handler_id)
        return EventStream(
            row.run_id, cursor, first, feed, include_internal=include_internal, on_close=feed.close
        )

    async def _last_sequence(self, run_id: str) -> int:
        live = self._live.find_run(run_id)
        if live is not None:
            return live.durable_sequence
        return (await self._store.last_sequences([run_id])).get(run_id, -1)

    async def _events_after(self, handler_id: str, run_id: str, cursor: int) -> list[StoredEvent]:
        live = self._live.of_run(handler_id, run_id)
        if live is not None:
            events = live.events_after(cursor)  # [] when nothing was written after it yet
        else:
            events = self._live.ended.events_after(run_id, cursor)
        if events is not None:
            return events
        return await self._store.read_events(run_id, after_sequence=cursor)

    async def _next_live(
        self, live: LiveRun, handler_id: str, run_id: str, cursor: int, timeout: float
    ) -> list[StoredEvent] | None:
        if live.durable_sequence <= cursor:
            await live.wait_changed(timeout)
        if self._stop.draining:
            return None
        # From the run in hand: one that has just ended has left the live set,
        # and its last write is still in its tail.
        events = live.events_after(cursor)
        if events is not None:
            return events
        return await self._store.read_events(run_id, after_sequence=cursor)


class _Feed:
    """What one stream reads next: its run's in-memory tail while it is live here,
    then its kept tail once it ended here, else a watch on the shared tail (taken
    when first needed, dropped when the run becomes live here or the stream ends).
    """

    def __init__(self, reader: EventReader, handler_id: str) -> None:
        self._reader = reader
        self._handler_id = handler_id
        self._watch: Watch | None = None

    async def __call__(self, run_id: str, cursor: int, timeout: float) -> list[StoredEvent] | None:
        reader = self._reader
        if reader._stop.draining:
            return None  # the stream ends; its client reconnects from its last event
        live = reader._live.of_run(self._handler_id, run_id)
        if live is not None:
            self.close()
            return await reader._next_live(live, self._handler_id, run_id, cursor, timeout)
        ended = reader._live.ended.events_after(run_id, cursor)
        if ended is not None:  # it ended here a moment ago: the rest of its log is in hand
            self.close()
            return ended
        if self._watch is None or self._watch.position != cursor:
            self.close()
            self._watch = reader._tail.watch(self._handler_id, run_id, cursor)
            reader._tail.poke()  # what was written since the cursor, at once
        # Waits its full time even if the run starts executing here meanwhile:
        # its events still come, through the tail (the run's writes wake it).
        events = await self._watch.next(timeout)
        return None if reader._stop.draining else events

    def close(self) -> None:
        """Stop watching the shared tail."""
        watch, self._watch = self._watch, None
        if watch is not None:
            self._reader._tail.unwatch(watch)


async def read_handler(
    store: AbstractWorkflowStore, handler_id: str, principal_in: list[str | None] | None
) -> PersistentHandler:
    """The handler (without its checkpoint) if one of ``principal_in`` owns it (``None``: any).

    Raises ``HandlerNotFoundError`` otherwise: another caller's handler is reported missing.
    """
    query = HandlerQuery(handler_id_in=[handler_id], principal_in=principal_in, load_ctx=False)
    rows = await store.query(query)
    if not rows:
        raise HandlerNotFoundError(handler_id)
    return rows[0]
