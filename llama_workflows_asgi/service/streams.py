"""Reading a run's event log as a live stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from .. import telemetry
from ..store.base import StoredEvent


class Heartbeat:
    """Yielded by a stream when nothing happened for a heartbeat interval."""


HEARTBEAT = Heartbeat()

NextEvents = Callable[[str, int, float], Awaitable[list[StoredEvent] | None]]
"""``(run_id, after_sequence, timeout) -> events``; ``None`` when the run is gone."""


@dataclass
class EventStream:
    """The written events of one run after a cursor, ending with its terminal event.

    Iterating yields lists of ``StoredEvent`` (internal ones only when asked)
    and ``HEARTBEAT`` after ``heartbeat_interval`` seconds without anything to send.
    ``cursor`` is the sequence of the last event read.
    """

    run_id: str
    cursor: int
    first: list[StoredEvent]
    next_events: NextEvents
    include_internal: bool = False
    heartbeat_interval: float | None = 25.0

    async def __aiter__(self) -> AsyncIterator[list[StoredEvent] | Heartbeat]:
        """Batches of events as they are written (one batch per read), or heartbeats."""
        with telemetry.stream_open():
            async for item in self._read():
                yield item

    async def _read(self) -> AsyncIterator[list[StoredEvent] | Heartbeat]:
        batch: list[StoredEvent] | None = self.first
        quiet_since = time.monotonic()
        while batch is not None:
            visible, ended = self._visible(batch)
            if visible:
                yield visible
                quiet_since = time.monotonic()
            if ended:
                return
            if self._heartbeat_due(quiet_since):
                yield HEARTBEAT
                quiet_since = time.monotonic()
            batch = await self.next_events(self.run_id, self.cursor, self._wait(quiet_since))

    def _visible(self, batch: list[StoredEvent]) -> tuple[list[StoredEvent], bool]:
        """The events of ``batch`` to send, up to the terminal one; and whether it came."""
        visible = []
        for event in batch:
            self.cursor = event.sequence
            if event.terminal or self.include_internal or not event.internal:
                visible.append(event)
            if event.terminal:
                return visible, True
        return visible, False

    def _heartbeat_due(self, quiet_since: float) -> bool:
        interval = self.heartbeat_interval
        return interval is not None and time.monotonic() - quiet_since >= interval

    def _wait(self, quiet_since: float) -> float:
        if self.heartbeat_interval is None:
            return 60.0
        return max(0.0, self.heartbeat_interval - (time.monotonic() - quiet_since))
