"""The written event logs of the runs that ended here last, for the streams that open late.

A client that starts a run and then opens its stream (``run-nowait``, then
``GET /events``) often arrives after a short run has ended and left the live
set. Its events were in this process's memory a moment before (the run's tail,
what its live streams read); reading them back from the store would cost a
query and the decoding of every row. So the runs that ended here last keep
their tail: at most ``keep_runs`` runs, ``keep_events`` events and
``keep_chars`` characters of payload in all, the first kept dropped first.

Only completed and cancelled runs are kept: their log is final once their end
is written, so a kept tail holds the rows the store holds (the ones it covers)
until the handler is deleted (a purge here forgets it; a stream opens only
after its handler is read from the store, so a deleted one is not found). A
failed run's log is not final: a retry (here, in another process, or from the
command line) reopens it, its failure no longer terminal. A tail that does not
reach back to a stream's cursor is not used; that stream reads the store.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from ..store.base import StoredEvent

FINAL_LOGS = frozenset({"completed", "cancelled"})
"""The ends after which a run's log never changes (a failed run may be retried)."""


def written_after(tail: Sequence[StoredEvent], last: int, cursor: int) -> list[StoredEvent] | None:
    """The events after ``cursor`` of a log written up to ``last``, whose end is ``tail``.

    ``[]`` when nothing is written after ``cursor``; ``None`` when ``tail``
    does not reach back to ``cursor`` (the rest is only in the store).
    """
    if cursor >= last:
        return []
    if not tail or tail[0].sequence > cursor + 1:
        return None
    return [event for event in tail if event.sequence > cursor]


class EndedLogs:
    """The tails of the runs that ended here last, by run id."""

    def __init__(
        self, keep_runs: int = 64, keep_events: int = 16384, keep_chars: int = 8 * 2**20
    ) -> None:
        self.keep_runs = keep_runs
        self.keep_events = keep_events
        self.keep_chars = keep_chars
        self._tails: OrderedDict[str, tuple[tuple[StoredEvent, ...], int]] = OrderedDict()
        self._events = self._chars = 0

    def __len__(self) -> int:
        return len(self._tails)

    def keep(self, run_id: str, status: str, tail: Sequence[StoredEvent]) -> None:
        """Keep the tail of ``run_id``, which ended ``status`` (its last write is in ``tail``).

        Nothing is kept unless its log is final (``FINAL_LOGS``) and fits the bounds alone.
        """
        if status not in FINAL_LOGS or not tail or len(tail) > self.keep_events:
            return
        chars = sum(len(event.payload) for event in tail)
        if chars > self.keep_chars:
            return
        self.forget(run_id)
        self._tails[run_id] = (tuple(tail), chars)
        self._events += len(tail)
        self._chars += chars
        while (
            len(self._tails) > self.keep_runs
            or self._events > self.keep_events
            or self._chars > self.keep_chars
        ):
            self._drop(self._tails.popitem(last=False)[1])

    def forget(self, run_id: str) -> None:
        """Drop the tail of ``run_id`` (kept or not)."""
        dropped = self._tails.pop(run_id, None)
        if dropped is not None:
            self._drop(dropped)

    def _drop(self, kept: tuple[tuple[StoredEvent, ...], int]) -> None:
        tail, chars = kept
        self._events -= len(tail)
        self._chars -= chars

    def events_after(self, run_id: str, cursor: int) -> list[StoredEvent] | None:
        """The kept events of ``run_id`` after ``cursor``, or ``None``.

        ``None`` when none is kept after it: the run's tail is not kept, does
        not reach back to ``cursor``, or ends before it (a stream past a run's
        end has had its terminal event; the store answers what it asks).
        """
        kept = self._tails.get(run_id)
        if kept is None:
            return None
        tail = kept[0]
        return written_after(tail, tail[-1].sequence, cursor) or None
