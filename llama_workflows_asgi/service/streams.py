"""Reading a run's event log as a live stream.

How long a reader may go without a batch (an SSE heartbeat, say) is the
reader's business: :meth:`EventStream.next_batch` waits at most as long as
it is told and says when nothing came.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from .. import telemetry
from ..store.base import StoredEvent

NextEvents = Callable[[str, int, float], Awaitable[list[StoredEvent] | None]]
"""``(run_id, after_sequence, timeout) -> events``; ``None`` when the run is gone."""


@dataclass
class EventStream:
    """The written events of one run after a cursor, ending with its terminal event.

    Iterating yields non-empty lists of ``StoredEvent`` (internal ones only
    when asked) until the terminal event; :meth:`next_batch` reads with a
    time limit. ``cursor`` is the sequence of the last event read. ``on_close``
    runs once when the stream ends or is closed (it frees what feeds it).
    """

    run_id: str
    cursor: int
    first: list[StoredEvent]
    next_events: NextEvents
    include_internal: bool = False
    on_close: Callable[[], None] | None = None
    ended: bool = field(default=False, init=False)
    _first_read: bool = field(default=False, init=False)

    async def __aiter__(self) -> AsyncIterator[list[StoredEvent]]:
        """Batches of events as they are written (one batch per read)."""
        with telemetry.stream_open():
            try:
                while (batch := await self.next_batch(60.0)) is not None:
                    if batch:
                        yield batch
            finally:
                self.close()

    async def next_batch(self, timeout: float) -> list[StoredEvent] | None:
        """The visible events written after the cursor, waiting up to ``timeout`` for some.

        ``[]`` when none came in time (or only hidden ones), ``None`` once the
        stream has ended (its terminal event was returned, or the run is gone).
        """
        if self.ended:
            return None
        if not self._first_read:
            self._first_read = True
            batch: list[StoredEvent] | None = self.first
        else:
            batch = await self.next_events(self.run_id, self.cursor, timeout)
        if batch is None:
            self.close()
            return None
        visible, terminal = self._visible(batch)
        if terminal:
            self.close()
        return visible

    def close(self) -> None:
        """End the stream and free what feeds it. Idempotent."""
        self.ended = True
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()

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
