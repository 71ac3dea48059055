"""Group commit: the one mechanism that turns many writes into one transaction.

A :class:`GroupCommit` has one queue and one task. Writes reach it by two
roads, both typed end to end:

- a :class:`Lane` (one per kind of write: a *batch function*) takes
  submitted payloads, each awaited by its caller (``await lane.submit(p)``);
- a :class:`Feed` pulls its payloads from a :class:`Source` at the moment a
  batch is formed: the service's dirty runs, so whatever they produced while
  the previous batch was being written joins the next one, coalesced per run
  (and by time: the next pull waits as long as the last one's write took).

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
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, Union

from ..errors import StoreUnavailableError, WorkflowServerError
from ._errors import is_retryable_conflict, unavailable

Tx = TypeVar("Tx")
P = TypeVar("P")
R = TypeVar("R")
R_contra = TypeVar("R_contra", contravariant=True)

Outcome = Union[R, WorkflowServerError]  # noqa: UP007 - a generic alias, evaluated at runtime
"""A batch function's result for one payload: its value, or the error that payload fails with."""

Result = Union[R, Exception]  # noqa: UP007
"""What a source learns of one payload: its outcome, or the error it failed with alone."""

BatchFunction = Callable[[Tx, list[P]], Awaitable[Sequence[Outcome[R]]]]
"""A kind of write: a transaction and payloads of consecutive jobs in, one outcome per payload."""

Begin = Callable[[], contextlib.AbstractAsyncContextManager[Tx]]
"""Opens a transaction, committed when the block exits without an error."""

Transact = Callable[[Callable[[Tx], Awaitable[None]]], Awaitable[None]]
"""Runs a batch's body in one transaction and commits it (see ``_engines`` for SQLite's)."""

_MAX_BATCH = 256
_CONFLICT_RETRIES = 3
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

    def poke(self, delay: float = 0.0) -> None:
        """The source has work: pull it in a batch soon (after ``delay`` seconds)."""

    def close(self) -> None:
        """Pull no more."""


class _Step(Protocol[Tx]):
    """Consecutive payloads of one kind inside a batch (a typed ``_Run`` seen from the writer)."""

    def __len__(self) -> int: ...

    async def run(self, tx: Tx) -> None:
        """Write the payloads in ``tx``, keeping their outcomes until the commit."""

    def settle(self) -> None:
        """The transaction committed: hand out the outcomes."""

    def fail(self, error: Exception) -> None:
        """The transaction failed: nothing was written."""

    def split(self) -> list[_Step[Tx]]:
        """One step per payload, to find a culprit."""


class _Queued(Protocol[Tx]):
    """What the queue holds: a lane with one job waiting, or a feed to pull."""

    def take(self, count: int) -> _Step[Tx] | None: ...


@dataclass(eq=False)
class _Run(Generic[Tx, P, R]):
    """Payloads handed to one batch function; outcomes go to futures or to a source."""

    function: BatchFunction[Tx, P, R]
    payloads: list[P]
    futures: list[asyncio.Future[R]] | None  # None: the payloads are a feed's
    feed: Feed[Tx, P, R] | None = None
    outcomes: list[Outcome[R]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.payloads)

    async def run(self, tx: Tx) -> None:
        self.outcomes = list(await self.function(tx, self.payloads))
        assert len(self.outcomes) == len(self.payloads), self.function

    def settle(self) -> None:
        self._hand_out(self.outcomes)

    def fail(self, error: Exception) -> None:
        outage = unavailable(error)
        if outage is not None and self.feed is not None:
            self.feed.kept(self.payloads, outage)
        elif outage is not None:
            cause = None if outage is error else error
            self._hand_out([_copy_outage(outage, cause) for _ in self.payloads])
        else:
            self._hand_out([error] * len(self.payloads))

    def split(self) -> list[_Step[Tx]]:
        if self.futures is None:
            return [_Run(self.function, [p], None, self.feed) for p in self.payloads]
        return [
            _Run(self.function, [payload], [future])
            for payload, future in zip(self.payloads, self.futures, strict=True)
        ]

    def _hand_out(self, results: Sequence[Result[R]]) -> None:
        if self.feed is not None:
            self.feed.settled(list(zip(self.payloads, results, strict=True)))
            return
        for future, result in zip(self.futures or (), results, strict=True):
            if future.done():  # the caller was cancelled; the write still happened
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


class Lane(Generic[Tx, P, R]):
    """One kind of write on a :class:`GroupCommit`: payloads submitted and awaited."""

    def __init__(self, writer: GroupCommit[Tx], function: BatchFunction[Tx, P, R]) -> None:
        self._writer, self._function = writer, function
        self._waiting: deque[tuple[P, asyncio.Future[R]]] = deque()

    async def submit(self, payload: P) -> R:
        """Queue one write and wait for its outcome (raised if it is an error)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((payload, future))
        self._writer.enqueue(self)
        return await future

    def take(self, count: int) -> _Step[Tx] | None:
        jobs = [self._waiting.popleft() for _ in range(min(count, len(self._waiting)))]
        return _Run(self._function, [p for p, _ in jobs], [f for _, f in jobs]) if jobs else None


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
        # long as that write took (2 to 50 ms), so while commits are
        # cheap a batch still gathers several steps of each busy run.
        self._taken_at = 0.0
        self._ready_at = 0.0
        self.closed = False

    def poke(self, delay: float = 0.0) -> None:
        """Pull the source in the next batch (after ``delay`` seconds, to coalesce more)."""
        if self.closed or self._queued or self._timer is not None:
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

    def take(self, count: int) -> _Step[Tx] | None:
        self._queued = False
        if self.closed or (self._timer is None and self._wait(0.0)):
            return None
        self._taken_at = time.monotonic()
        payloads = list(self._source.take())
        return _Run(self._function, payloads, None, self) if payloads else None

    def settled(self, results: Sequence[tuple[P, Result[R]]]) -> None:
        self._backoff = 0.0
        now = time.monotonic()
        self._ready_at = now + min(max(now - self._taken_at, _MIN_COALESCE), _MAX_COALESCE)
        self._source.settled(results)

    def _wait(self, delay: float) -> bool:
        """Start a timer if the pull must wait (``delay``, or coalescing); whether it must."""
        wait = max(delay, self._ready_at - time.monotonic())
        if wait <= 0:
            return False
        self._timer = asyncio.get_running_loop().call_later(wait, self._due)
        return True

    def kept(self, payloads: Sequence[P], error: StoreUnavailableError) -> None:
        # The backoff first: the source re-marks its runs, and a poke must wait for it.
        self._backoff = min(max(self._backoff * 2, 0.05), _MAX_BACKOFF)
        if not self.closed and self._timer is None:
            self._queued = False
            self._timer = asyncio.get_running_loop().call_later(self._backoff, self._due)
        self._source.kept(payloads, error)

    def _due(self) -> None:
        self._timer = None
        self._ready_at = 0.0  # its wait is over (the clock may read a hair early)
        self.poke()


class GroupCommit(Generic[Tx]):
    """One queue and one task: runs the queued writes in batches, one transaction per batch."""

    def __init__(
        self,
        begin: Begin[Tx] | None = None,
        *,
        transact: Transact[Tx] | None = None,
        max_batch: int = _MAX_BATCH,
    ) -> None:
        if transact is None:
            assert begin is not None, "a GroupCommit needs begin or transact"
            transact = in_transaction(begin)
        self._transact = transact
        self._max_batch = max_batch
        self._queue: deque[_Queued[Tx]] = deque()
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

    def enqueue(self, item: _Queued[Tx]) -> None:
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
        steps: list[_Step[Tx]] = []
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
                step.fail(closed)
            while self._queue:
                step_ = self._queue.popleft().take(self._max_batch)
                if step_ is not None:
                    step_.fail(closed)

    def _next_batch(self) -> list[_Step[Tx]]:
        """Take what is queued, in order, consecutive jobs of one lane as one step."""
        steps: list[_Step[Tx]] = []
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

    async def _commit(self, steps: list[_Step[Tx]]) -> None:
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
                step.settle()
            return

    async def _failed(self, steps: list[_Step[Tx]], error: Exception) -> None:
        if unavailable(error) is None and sum(len(step) for step in steps) > 1:
            for alone in [one for step in steps for one in step.split()]:
                await self._commit([alone])  # nothing was written: find the culprit
            return
        for step in steps:
            step.fail(error)


async def _run_all(steps: Sequence[_Step[Tx]], tx: Tx) -> None:
    for step in steps:
        await step.run(tx)


def in_transaction(begin: Begin[Tx]) -> Transact[Tx]:
    """A :data:`Transact` running the body inside ``begin()``."""

    async def transact(body: Callable[[Tx], Awaitable[None]]) -> None:
        async with begin() as tx:
            await body(tx)

    return transact


def _copy_outage(error: StoreUnavailableError, cause: BaseException | None) -> Exception:
    # Each caller gets its own exception object: tracebacks are per raise site.
    fresh = StoreUnavailableError(str(error), retry_after=error.retry_after)
    fresh.__cause__ = cause
    return fresh


@contextlib.asynccontextmanager
async def no_transaction() -> AsyncIterator[None]:
    """The transaction of a store that has none (in memory): each write applies at once."""
    yield None
