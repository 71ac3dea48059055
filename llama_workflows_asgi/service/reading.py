"""Reading a run's event log: where a stream starts, and what it is fed next.

Events of a run live here come from its in-memory tail (only what is already
written is shown); events of any other run come from the store, polled every
``stream_poll_interval`` until its terminal event is read. A graceful stop
ends every stream; its client reconnects from its last event elsewhere.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

from ..errors import HandlerNotFoundError
from ..store.base import AbstractWorkflowStore, HandlerQuery, PersistentHandler, StoredEvent
from .config import ServiceConfig
from .live_runs import LiveRuns
from .stopping import StopSignal
from .streams import EventStream


class EventReader:
    """Opens and feeds the event streams of handlers, live here or not."""

    def __init__(
        self,
        store: AbstractWorkflowStore,
        live: LiveRuns,
        config: ServiceConfig,
        stop: StopSignal,
    ) -> None:
        self._store = store
        self._live = live
        self._config = config
        self._stop = stop

    async def open(
        self,
        row: PersistentHandler,
        *,
        after: int | Literal["now"],
        include_internal: bool,
        heartbeat_interval: float | None,
    ) -> EventStream | None:
        """A stream of ``row``'s written events after ``after`` (``None``: nothing is left)."""
        if row.run_id is None:
            raise HandlerNotFoundError(row.handler_id)
        cursor = await self._last_sequence(row.run_id) if after == "now" else after
        first = await self._events_after(row.handler_id, row.run_id, cursor)
        if not first and row.is_terminal:
            return None
        return EventStream(
            row.run_id,
            cursor,
            first,
            partial(self._next_events, row.handler_id),
            include_internal=include_internal,
            heartbeat_interval=heartbeat_interval,
        )

    async def _last_sequence(self, run_id: str) -> int:
        live = self._live.find_run(run_id)
        if live is not None:
            return live.durable_sequence
        return (await self._store.last_sequences([run_id])).get(run_id, -1)

    async def _events_after(self, handler_id: str, run_id: str, cursor: int) -> list[StoredEvent]:
        live = self._live.of_run(handler_id, run_id)
        if live is not None:
            if cursor >= live.durable_sequence:
                return []  # nothing written after the cursor yet
            if live.tail and live.tail[0].sequence <= cursor + 1:
                return [e for e in live.tail if e.sequence > cursor]
        return await self._store.read_events(run_id, after_sequence=cursor)

    async def _next_events(
        self, handler_id: str, run_id: str, cursor: int, timeout: float
    ) -> list[StoredEvent] | None:
        if self._stop.draining:
            return None  # the stream ends; its client reconnects from its last event
        live = self._live.of_run(handler_id, run_id)
        if live is not None:
            if live.durable_sequence <= cursor:
                await live.wait_changed(timeout)
            if self._stop.draining:
                return None
            return await self._events_after(handler_id, run_id, cursor)
        events = await self._store.read_events(run_id, after_sequence=cursor)
        if events:
            return events
        if not await self._still_streamable(handler_id, run_id, cursor):
            return None
        await self._stop.pause(min(timeout, self._config.stream_poll_interval))
        return []

    async def _still_streamable(self, handler_id: str, run_id: str, cursor: int) -> bool:
        rows = await self._store.query(HandlerQuery(handler_id_in=[handler_id], load_ctx=False))
        if not rows or rows[0].run_id != run_id:
            return False
        if rows[0].is_terminal:
            # The terminal event is written with the status: read it now.
            return bool(await self._store.read_events(run_id, after_sequence=cursor, limit=1))
        return True


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
