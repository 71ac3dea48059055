"""One reader of the event log for every stream of a run this process does not execute.

A stream of a run executing elsewhere (or released while it waits) does not
query the store itself: it registers a :class:`Watch` here. Every
``interval`` (or at once when a wakeup names one of the watched runs) the tail
reads the new events of all watched runs in one statement and hands each
watch the events after its own position. Every ``check_every`` reads it also
looks up the watched runs' rows in one statement, to end the watches of runs
deleted or finished without a terminal event to read (so does the first read
after a new watch or a cancel). A watch costs memory, not queries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from .._aio import first_set
from ..store.base import AbstractWorkflowStore, HandlerQuery, StoredEvent
from ..store.notifications import Notice
from .guard import start_guarded

logger = logging.getLogger(__name__)

_READ_LIMIT = 1000


@dataclass(eq=False)
class Watch:
    """One stream's place in a run's event log, fed by the tail.

    ``position`` is the sequence of the last event handed over (or the stream's
    cursor when it registered). ``ended`` is set when the run is gone.
    """

    handler_id: str
    run_id: str
    position: int
    events: list[StoredEvent] = field(default_factory=list)
    ended: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def next(self, timeout: float) -> list[StoredEvent] | None:
        """Events read since the last call, waiting up to ``timeout``; ``None`` once ended."""
        if not self.events and not self.ended:
            await first_set([self._changed], timeout)
        self._changed.clear()
        if self.events:
            events, self.events = self.events, []
            return events
        return None if self.ended else []

    def _feed(self, events: list[StoredEvent]) -> None:
        new = [e for e in events if e.sequence > self.position]
        if new:
            self.events.extend(new)
            self.position = new[-1].sequence
            self._changed.set()

    def _end(self) -> None:
        self.ended = True
        self._changed.set()


class SharedTail:
    """Reads new events for every watched run in one statement per interval."""

    def __init__(
        self, store: AbstractWorkflowStore, interval: float, *, check_every: int = 20
    ) -> None:
        self._store = store
        self.interval = interval
        self.check_every = check_every
        self._watches: dict[str, list[Watch]] = {}
        self._handlers: dict[str, str] = {}  # handler id -> run id, for wakeups by handler
        self._poke = asyncio.Event()
        self._check_soon = False  # look at the rows at the next read
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] = _nothing
        self.reads = 0
        """How many reads of the event log the tail made (for tests and benchmarks)."""

    def start(self) -> None:
        """Start reading, and be woken by the store's notifications."""
        if self._task is None:
            self._unsubscribe = self._store.notifications.subscribe(self.notice)
            self._task = start_guarded("workflow-stream-tail", self._loop, logger)

    async def stop(self) -> None:
        """Stop reading and end every watch (their streams end; clients reconnect)."""
        self._unsubscribe()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for watches in self._watches.values():
            for watch in watches:
                watch._end()
        self._watches.clear()
        self._handlers.clear()

    def watch(self, handler_id: str, run_id: str, cursor: int) -> Watch:
        """Follow ``run_id``'s log after ``cursor`` until :meth:`unwatch`."""
        watch = Watch(handler_id, run_id, cursor)
        self._watches.setdefault(run_id, []).append(watch)
        self._handlers[handler_id] = run_id
        self._check_soon = True  # it may have finished with its last event before the cursor
        return watch

    def unwatch(self, watch: Watch) -> None:
        """Stop feeding ``watch``."""
        watches = self._watches.get(watch.run_id, [])
        if watch in watches:
            watches.remove(watch)
        if not watches:
            self._watches.pop(watch.run_id, None)
            if self._handlers.get(watch.handler_id) == watch.run_id:
                del self._handlers[watch.handler_id]

    def poke(self) -> None:
        """Read at once (a stream just moved here from a live run)."""
        self._poke.set()

    @property
    def watched(self) -> int:
        """How many watches are fed."""
        return sum(len(watches) for watches in self._watches.values())

    def notice(self, notice: Notice, keys: Collection[str]) -> None:
        """A store wakeup: read at once if it concerns a watched run."""
        if notice == "events" and any(key in self._watches for key in keys):
            self._poke.set()
        elif notice == "all" or (notice == "wake" and any(k in self._handlers for k in keys)):
            self._check_soon = True  # cancelled (or wakeups missed): the rows may say it ended
            self._poke.set()

    async def read_once(self, *, check_rows: bool = False) -> None:
        """One read for all watches (and with ``check_rows`` one look at their rows)."""
        if not self._watches:
            return
        gone = await self._gone_runs() if check_rows else set()
        while True:
            read_for = [w for watches in self._watches.values() for w in watches]
            positions = {
                run: min(w.position for w in watches) for run, watches in self._watches.items()
            }
            found = await self._store.read_new_events(positions, limit=_READ_LIMIT)
            self.reads += 1
            for run_id, events in found.items():
                for watch in self._watches.get(run_id, []):
                    watch._feed(events)
            if sum(map(len, found.values())) < _READ_LIMIT:
                break  # else more is waiting: read on at once
        # The rows were read first: a watch of a gone run that the last read
        # brought nothing will never get anything (a final event commits with
        # its status). Watches added meanwhile wait for the next check.
        for watch in read_for:
            if watch.run_id in gone and not watch.events and not watch.ended:
                watch._end()
                self.unwatch(watch)

    async def _gone_runs(self) -> set[str]:
        """Watched runs whose row is gone, replaced, or finished (its terminal event read)."""
        # Watches come and go while the query runs: judge only those asked about.
        asked = {run_id: watches[0].handler_id for run_id, watches in self._watches.items()}
        query = HandlerQuery(handler_id_in=sorted(set(asked.values())), load_ctx=False)
        rows = {row.handler_id: row for row in await self._store.query(query)}
        gone = set()
        for run_id, handler_id in asked.items():
            row = rows.get(handler_id)
            if row is None or row.run_id != run_id or row.is_terminal:
                gone.add(run_id)
        return gone

    async def _loop(self) -> None:
        rounds = 0
        while True:
            await first_set([self._poke], self.interval)
            self._poke.clear()
            rounds += 1
            check, self._check_soon = self._check_soon or rounds % self.check_every == 0, False
            try:
                await self.read_once(check_rows=check)
            except Exception as exc:  # the store is away: the next round tries again
                logger.warning("reading new events for streams failed: %s", exc)


def _nothing() -> None:
    """What unsubscribing does before subscribing."""
