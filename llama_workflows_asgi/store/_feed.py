"""A feed: payloads the group commit pulls from a source at the moment it forms a batch.

The service's dirty runs are such a source: whatever they produced while the
previous batch was being written joins the next one, coalesced per run, and by
time (the next pull waits as long as the last one's write took, times the group
commit's ``coalesce``, 2 to 50 ms),
unless the source says its work is complete (nothing it could still produce
would join: every run has ended), which waiting cannot add to. After an outage
the payloads go back to the source, pulled again after a backoff that doubles
up to 5 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from ..errors import StoreUnavailableError
from ._steps import BatchFunction, Result, Run, Step

if TYPE_CHECKING:
    from ._batch import GroupCommit

Tx = TypeVar("Tx")
P = TypeVar("P")
R = TypeVar("R")
R_contra = TypeVar("R_contra", contravariant=True)

_MAX_BACKOFF = 5.0
_MIN_COALESCE, _MAX_COALESCE = 0.002, 0.05


class Source(Protocol[P, R_contra]):
    """Where a :class:`Feed` pulls its payloads from (see the module docstring)."""

    def take(self) -> Sequence[P]:
        """Everything to write now (called by the writer task as it forms a batch)."""

    def settled(self, results: Sequence[tuple[P, Result[R_contra]]]) -> None:
        """These payloads are decided: written (committed) or refused alone."""

    def kept(self, payloads: Sequence[P], error: StoreUnavailableError) -> None:
        """The store was unavailable: nothing of ``payloads`` was written."""


class Poke(Protocol):
    """A feed as its source sees it (``AbstractWorkflowStore.progress_feed``)."""

    def poke(self, delay: float = 0.0, *, complete: bool = False) -> None:
        """The source has work: pull it in a batch soon (after ``delay`` seconds).

        ``complete``: nothing more will join this work (every run has ended),
        so it is pulled without waiting to coalesce.
        """

    def close(self) -> None:
        """Pull no more."""


class Feed(Generic[Tx, P, R]):
    """Payloads a :class:`GroupCommit` pulls from a :class:`Source` when it forms a batch."""

    def __init__(
        self, writer: GroupCommit[Tx], function: BatchFunction[Tx, P, R], source: Source[P, R]
    ) -> None:
        self._writer, self._function, self._source = writer, function, source
        self._queued = False
        self._backoff = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # Coalescing by time: after a pull was written, the next one waits as
        # long as that write took (times ``coalesce``; 2 to 50 ms), so while
        # commits are cheap a batch still gathers several steps of each busy run.
        self._taken_at = 0.0
        self._ready_at = 0.0
        # What the latest poke said: the work is complete (no coalescing wait),
        # and whether the pending timer only waits to coalesce (one such poke ends it).
        self._complete = False
        self._coalescing = False
        self.closed = False

    def poke(self, delay: float = 0.0, *, complete: bool = False) -> None:
        """Pull the source in the next batch (after ``delay`` seconds, to coalesce more).

        ``complete`` (see ``Poke``) skips the wait to coalesce, never a backoff or ``delay``.
        """
        if self.closed:
            return
        self._complete = complete and delay <= 0
        if self._timer is not None and self._complete and self._coalescing:
            self._timer.cancel()  # waiting would gather nothing more
            self._timer = None
        if self._queued or self._timer is not None:
            return  # already due, or backing off after an outage
        if not self._wait(delay):
            self._queued = True
            self._writer.enqueue(self)

    def close(self) -> None:
        """Pull no more (what was taken is still written)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def take(self, count: int) -> Step[Tx] | None:
        self._queued = False
        # A timer pending (a backoff, or coalescing) pulls when it is due, never before.
        if self.closed or self._timer is not None or self._wait(0.0):
            return None
        self._taken_at = time.monotonic()
        self._complete = False
        payloads = list(self._source.take())
        return Run(self._function, payloads, None, self) if payloads else None

    def settled(self, results: Sequence[tuple[P, Result[R]]]) -> None:
        self._backoff = 0.0
        now = time.monotonic()
        took = (now - self._taken_at) * self._writer.coalesce
        self._ready_at = now + min(max(took, _MIN_COALESCE), _MAX_COALESCE)
        self._source.settled(results)

    def _wait(self, delay: float) -> bool:
        """Start a timer if the pull must wait (``delay``, or coalescing); whether it must."""
        coalesce = 0.0 if self._complete else self._ready_at - time.monotonic()
        wait = max(delay, coalesce)
        if wait <= 0:
            return False
        self._coalescing = coalesce >= delay
        self._timer = asyncio.get_running_loop().call_later(wait, self._due)
        return True

    def kept(self, payloads: Sequence[P], error: StoreUnavailableError) -> None:
        # The backoff first: the source re-marks its runs, and a poke must wait for it.
        self._backoff = min(max(self._backoff * 2, 0.05), _MAX_BACKOFF)
        if not self.closed:
            if self._timer is not None:
                self._timer.cancel()  # a wait to coalesce must not cut the backoff short
            self._queued = False
            self._coalescing = False
            self._timer = asyncio.get_running_loop().call_later(self._backoff, self._due)
        self._source.kept(payloads, error)

    def _due(self) -> None:
        self._timer = None
        self._ready_at = 0.0  # its wait is over (the clock may read a hair early)
        self.poke(complete=self._complete)
