"""A lane's submitted writes, and a step: payloads of one kind handed to their batch function.

A :class:`Lane` queues payloads, each awaited by its caller; when the group
commit (``_batch``) forms a batch it takes them as one :class:`Run`, which runs
them in the batch's transaction and keeps their outcomes until the commit.
Then :meth:`Run.settle` hands them out, to the callers' futures or to a feed's
source; if the transaction failed, :meth:`Run.fail` applies the outage rule
(each caller its own ``StoreUnavailableError``, a feed's payloads given back)
and :meth:`Run.split` gives one step per payload to find a culprit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, Union

from ..errors import StoreUnavailableError, WorkflowServerError
from ._errors import unavailable

if TYPE_CHECKING:
    from ._batch import GroupCommit
    from ._feed import Feed

Tx = TypeVar("Tx")
P = TypeVar("P")
R = TypeVar("R")

Outcome = Union[R, WorkflowServerError]  # noqa: UP007 - a generic alias, evaluated at runtime
"""A batch function's result for one payload: its value, or the error that payload fails with."""

Result = Union[R, Exception]  # noqa: UP007
"""What a source learns of one payload: its outcome, or the error it failed with alone."""

BatchFunction = Callable[[Tx, list[P]], Awaitable[Sequence[Outcome[R]]]]
"""A kind of write: a transaction and payloads of consecutive jobs in, one outcome per payload."""


class Step(Protocol[Tx]):
    """Consecutive payloads of one kind inside a batch (a typed ``Run`` seen from the writer)."""

    def __len__(self) -> int: ...

    async def run(self, tx: Tx) -> None:
        """Write the payloads in ``tx``, keeping their outcomes until the commit."""

    def settle(self) -> None:
        """The transaction committed: hand out the outcomes."""

    def fail(self, error: Exception) -> None:
        """The transaction failed: nothing was written."""

    def split(self) -> list[Step[Tx]]:
        """One step per payload, to find a culprit."""


class Queued(Protocol[Tx]):
    """What the queue holds: a lane with one job waiting, or a feed to pull."""

    def take(self, count: int) -> Step[Tx] | None: ...


@dataclass(eq=False)
class Run(Generic[Tx, P, R]):
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

    def split(self) -> list[Step[Tx]]:
        if self.futures is None:
            return [Run(self.function, [p], None, self.feed) for p in self.payloads]
        return [
            Run(self.function, [payload], [future])
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

    def take(self, count: int) -> Step[Tx] | None:
        jobs = [self._waiting.popleft() for _ in range(min(count, len(self._waiting)))]
        return Run(self._function, [p for p, _ in jobs], [f for _, f in jobs]) if jobs else None


def _copy_outage(error: StoreUnavailableError, cause: BaseException | None) -> Exception:
    # Each caller gets its own exception object: tracebacks are per raise site.
    fresh = StoreUnavailableError(str(error), retry_after=error.retry_after)
    fresh.__cause__ = cause
    return fresh
