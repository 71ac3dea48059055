"""Wakeups after committed writes: who should look at the store again, at once.

Three topics, each with the ids it concerns:

* ``wake``: handler ids whose owner should look again (an event was sent in,
  the run was cancelled by another process);
* ``events``: run ids with newly written events (streams of those runs);
* ``free``: runs were released and may be claimed (keys are unused).

A wakeup is a hint, never the only way news travels: every reader also polls,
so a lost wakeup costs latency, not correctness. This default delivers only
within the process that wrote (SQLite, memory); ``_notify_pg`` carries them
between processes on PostgreSQL with ``LISTEN/NOTIFY``. A listener is called
with the topic ``"all"`` when wakeups may have been missed (a reconnect): it
should then look at everything once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Literal

logger = logging.getLogger(__name__)

Topic = Literal["wake", "events", "free"]
Notice = Literal["wake", "events", "free", "all"]
Listener = Callable[[Notice, Collection[str]], None]
"""``(topic, keys) -> None``; called on the event loop, must not block or raise."""

TOPICS: tuple[Topic, ...] = ("wake", "events", "free")


class Notifications:
    """Listeners of one store's wakeups, delivered within this process."""

    remote = False
    """Whether writes of other processes are notified too (PostgreSQL)."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every wakeup; returns the function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def start(self) -> None:
        """Begin receiving wakeups of other processes (nothing to do here). Idempotent."""

    async def close(self) -> None:
        """Stop receiving wakeups of other processes."""

    def published(self, topic: Topic, keys: Collection[str]) -> None:
        """A write carrying ``topic`` committed in this process: wake the listeners."""
        if keys:
            self.deliver(topic, keys)

    def deliver(self, notice: Notice, keys: Collection[str]) -> None:
        """Call every listener; one that fails is logged and the others still run."""
        for listener in list(self._listeners):
            try:
                listener(notice, keys)
            except Exception:
                logger.exception("a wakeup listener failed")
