"""Group commit: the one mechanism that turns many writes into one transaction.

A :class:`GroupCommit` has one queue and one task. Writes reach it by two
roads, both typed end to end:

- a :class:`Lane` (one per kind of write: a *batch function*) takes
  submitted payloads, each awaited by its caller (``await lane.submit(p)``);
- a :class:`Feed` pulls its payloads from a :class:`Source` at the moment a
  batch is formed: the service's dirty runs, so whatever they produced while
  the previous batch was being written joins the next one, coalesced per run
  (and by time: the next pull waits as long as the last one's write took, or a
  multiple of that, ``coalesce``).

The task takes everything queued, runs it in queue order inside one
transaction and commits once, so N concurrent writes cost one commit (one
fsync on SQLite, one COMMIT round trip on PostgreSQL). Consecutive payloads of
one kind are handed to their batch function together, so it may merge them
into fewer statements.

A batch function returns one outcome per payload: a value, or a
:class:`WorkflowServerError` for a payload whose precondition failed (it then
wrote nothing for it). When the transaction itself fails, an outage
(:func:`unavailable`) fails every submitted payload of the batch and gives a
feed's payloads back to its source, which is pulled again after a growing
backoff; any other error is isolated by re-running the payloads one per
transaction, so one faulty write fails alone.

This module holds the queue, the task and those failure rules, and names
every type of the mechanism; a lane and its steps live in ``_steps``, the
feed in ``_feed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from ..errors import StoreUnavailableError
from ._errors import is_retryable_conflict, unavailable
from ._feed import Feed, Poke, Source
from ._steps import BatchFunction, Lane, Outcome, Queued, Result, Step

__all__ = [
    "BatchFunction",
    "Begin",
    "Feed",
    "GroupCommit",
    "Lane",
    "Outcome",
    "Poke",
    "Result",
    "Source",
    "Transact",
    "in_transaction",
    "no_transaction",
]

Tx = TypeVar("Tx")
P = TypeVar("P")
R = TypeVar("R")

Begin = Callable[[], contextlib.AbstractAsyncContextManager[Tx]]
"""Opens a transaction, committed when the block exits without an error."""

Transact = Callable[[Callable[[Tx], Awaitable[None]]], Awaitable[None]]
"""Runs a batch's body in one transaction and commits it (see ``_engines`` for SQLite's)."""

_MAX_BATCH = 256
_CONFLICT_RETRIES = 3

logger = logging.getLogger(__name__)


class GroupCommit(Generic[Tx]):
    """One queue and one task: runs the queued writes in batches, one transaction per batch."""

    def __init__(
        self,
        begin: Begin[Tx] | None = None,
        *,
        transact: Transact[Tx] | None = None,
        max_batch: int = _MAX_BATCH,
        coalesce: float = 1.0,
    ) -> None:
        if transact is None:
            assert begin is not None, "a GroupCommit needs begin or transact"
            transact = in_transaction(begin)
        self._transact = transact
        self._max_batch = max_batch
        self.coalesce = coalesce
        """How many times as long as a feed's write took the feed waits before its next pull."""
        self._queue: deque[Queued[Tx]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.transactions = 0  # committed batches, for tests and diagnostics

    def lane(self, function: BatchFunction[Tx, P, R]) -> Lane[Tx, P, R]:
        """A lane for ``function``'s writes (one per kind; keep it)."""
        return Lane(self, function)

    def feed(self, function: BatchFunction[Tx, P, R], source: Source[P, R]) -> Feed[Tx, P, R]:
        """A feed writing ``source``'s payloads with ``function`` (poke it when it has work)."""
        return Feed(self, function, source)

    def enqueue(self, item: Queued[Tx]) -> None:
        """Put ``item`` in line (a lane's job, a feed's pull) and make sure the task runs."""
        self._queue.append(item)
        self._ensure_running()
        self._wake.set()

    async def aclose(self) -> None:
        """Finish the queued writes, then stop the writer task."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            task.cancel()  # its loop is gone or elsewhere: nothing can be awaited here
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.shield(task)
        finally:
            self._closing = False

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        # A task of a previous (closed) event loop is dead: start afresh.
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._loop(), name="workflow-store-writer")

    async def _loop(self) -> None:
        steps: list[Step[Tx]] = []
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                steps = self._next_batch()
                if steps:
                    await self._commit(steps)
                steps = []
        finally:
            # Cancelled (event loop shutting down): nobody will write these.
            closed = StoreUnavailableError("the workflow store is closed")
            for step in steps:
                _tell(step.fail, closed)
            while self._queue:
                step_ = self._queue.popleft().take(self._max_batch)
                if step_ is not None:
                    _tell(step_.fail, closed)

    def _next_batch(self) -> list[Step[Tx]]:
        """Take what is queued, in order, consecutive jobs of one lane as one step."""
        steps: list[Step[Tx]] = []
        size = 0
        while self._queue and size < self._max_batch:
            item, count = self._queue.popleft(), 1
            while self._queue and self._queue[0] is item and size + count < self._max_batch:
                self._queue.popleft()
                count += 1
            step = item.take(count)
            if step is not None:
                steps.append(step)
                size += len(step)
        return steps

    async def _commit(self, steps: list[Step[Tx]]) -> None:
        for attempt in itertools.count(1):
            try:
                await self._transact(lambda tx: _run_all(steps, tx))
            except Exception as error:
                if is_retryable_conflict(error) and attempt < _CONFLICT_RETRIES:
                    continue
                await self._failed(steps, error)
                return
            self.transactions += 1
            for step in steps:
                _tell(step.settle)
            return

    async def _failed(self, steps: list[Step[Tx]], error: Exception) -> None:
        if unavailable(error) is None and sum(len(step) for step in steps) > 1:
            for alone in [one for step in steps for one in step.split()]:
                await self._commit([alone])  # nothing was written: find the culprit
            return
        for step in steps:
            _tell(step.fail, error)


def _tell(callback: Callable[..., None], *args: BaseException) -> None:
    """Hand a step its outcome; a failing callback is logged, never taken out on the batch.

    Settling runs the callers' bookkeeping (the service's runs, notifications)
    after the commit: one raising must neither leave the rest of the batch
    unsettled nor end the writer task, which every write of the store shares.
    """
    try:
        callback(*args)
    except Exception:
        logger.exception("settling a write of the group commit failed")


async def _run_all(steps: Sequence[Step[Tx]], tx: Tx) -> None:
    for step in steps:
        await step.run(tx)


def in_transaction(begin: Begin[Tx]) -> Transact[Tx]:
    """A :data:`Transact` running the body inside ``begin()``."""

    async def transact(body: Callable[[Tx], Awaitable[None]]) -> None:
        async with begin() as tx:
            await body(tx)

    return transact


@contextlib.asynccontextmanager
async def no_transaction() -> AsyncIterator[None]:
    """The transaction of a store that has none (in memory): each write applies at once."""
    yield None
