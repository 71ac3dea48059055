"""Group commit: one writer task turns many concurrent writes into one transaction.

Callers submit a *job*: a batch function (the kind of write) and its payload.
The writer takes everything queued, runs it in submission order inside one
transaction and commits once, so N concurrent writes cost one commit (one
fsync on SQLite, one round trip of COMMIT on PostgreSQL) instead of N.
Consecutive jobs of the same kind are handed to their function together, so
it may merge them into fewer statements.

A batch function returns one outcome per payload: a value, or a
:class:`WorkflowServerError` for a payload whose precondition failed. Such a
job fails alone; the function must have written nothing for it. When the
transaction itself fails, an outage (:func:`unavailable`) fails every job of
the batch; any other error is isolated by re-running the jobs one per
transaction, so one faulty write cannot take its neighbours down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, Union

from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import StoreUnavailableError, WorkflowServerError
from ._errors import is_retryable_conflict, unavailable

P = TypeVar("P")
R = TypeVar("R")

Outcome = Union[R, WorkflowServerError]  # noqa: UP007 - a generic alias, evaluated at runtime
"""A batch function's result for one payload: its value, or the error that payload fails with."""

BatchFunction = Callable[[AsyncConnection, list[P]], Awaitable[Sequence[Outcome[R]]]]
"""A kind of write: payloads of consecutive jobs in, one outcome per payload out."""

Begin = Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]]

_MAX_BATCH = 256
_CONFLICT_RETRIES = 3


@dataclass(eq=False)
class _Job(Generic[P, R]):
    kind: BatchFunction[P, R]
    payload: P
    future: asyncio.Future[R] = field(repr=False)


class GroupCommitWriter:
    """Runs submitted writes in batches, one transaction per batch."""

    def __init__(self, begin: Begin, *, max_batch: int = _MAX_BATCH) -> None:
        self._begin = begin
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Job[Any, Any] | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0  # committed batches, for tests and diagnostics

    async def submit(self, kind: BatchFunction[P, R], payload: P) -> R:
        """Queue one write and wait for its outcome (raised if it is an error)."""
        queue = self._ensure_running()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        job = _Job(kind, payload, future)
        queue.put_nowait(job)
        return await job.future

    async def aclose(self) -> None:
        """Finish the queued writes, then stop the writer task."""
        task, queue = self._task, self._queue
        self._task = self._queue = None
        if task is None or queue is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            task.cancel()  # its loop is gone or elsewhere: nothing can be awaited here
            return
        queue.put_nowait(None)
        await asyncio.shield(task)

    def _ensure_running(self) -> asyncio.Queue[_Job[Any, Any] | None]:
        loop = asyncio.get_running_loop()
        # A task of a previous (closed) event loop is dead: start afresh.
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue), name="workflow-store-writer")
        assert self._queue is not None
        return self._queue

    async def _run(self, queue: asyncio.Queue[_Job[Any, Any] | None]) -> None:
        jobs: list[_Job[Any, Any]] = []
        try:
            while True:
                jobs, stop = await _next_batch(queue, self._max_batch)
                if jobs:
                    await self._commit(jobs)
                if stop:
                    return
        finally:
            # Cancelled (event loop shutting down): nobody will run these.
            pending = [*jobs, *_drain(queue)]
            _fail(pending, StoreUnavailableError("the workflow store is closed"))

    async def _commit(self, jobs: list[_Job[Any, Any]]) -> None:
        for attempt in itertools.count(1):
            try:
                outcomes = await self._transaction(jobs)
            except Exception as error:
                if is_retryable_conflict(error) and attempt < _CONFLICT_RETRIES:
                    continue
                await self._failed(jobs, error)
                return
            self.transactions += 1
            _resolve(jobs, outcomes)
            return

    async def _transaction(self, jobs: Sequence[_Job[Any, Any]]) -> list[Outcome[Any]]:
        # Jobs of every kind share this transaction: their outcomes are typed per job.
        outcomes: list[Outcome[Any]] = []
        async with self._begin() as conn:
            for kind, group in itertools.groupby(jobs, key=lambda job: job.kind):
                payloads = [job.payload for job in group]
                results = await kind(conn, payloads)
                assert len(results) == len(payloads), kind
                outcomes.extend(results)
        return outcomes

    async def _failed(self, jobs: list[_Job[Any, Any]], error: Exception) -> None:
        outage = unavailable(error)
        if outage is not None:
            _fail(jobs, outage, cause=error)
        elif len(jobs) > 1:
            for job in jobs:  # find the culprit: nothing was written, so re-run alone
                await self._commit([job])
        else:
            _fail(jobs, error)


async def _next_batch(
    queue: asyncio.Queue[_Job[Any, Any] | None], limit: int
) -> tuple[list[_Job[Any, Any]], bool]:
    """Wait for one job, then take whatever else is already queued (up to ``limit``)."""
    first = await queue.get()
    if first is None:
        return [], True
    jobs = [first]
    while len(jobs) < limit and not queue.empty():
        job = queue.get_nowait()
        if job is None:
            return jobs, True
        jobs.append(job)
    return jobs, False


def _drain(queue: asyncio.Queue[_Job[Any, Any] | None]) -> Iterator[_Job[Any, Any]]:
    while not queue.empty():
        job = queue.get_nowait()
        if job is not None:
            yield job


def _resolve(jobs: Sequence[_Job[Any, Any]], outcomes: Sequence[Outcome[Any]]) -> None:
    for job, outcome in zip(jobs, outcomes, strict=True):
        if job.future.done():  # the caller was cancelled; the write still happened
            continue
        if isinstance(outcome, WorkflowServerError):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)


def _fail(
    jobs: Sequence[_Job[Any, Any]], error: BaseException, *, cause: BaseException | None = None
) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(_copy_error(error, cause))


def _copy_error(error: BaseException, cause: BaseException | None) -> BaseException:
    # Each caller gets its own exception object: tracebacks are per raise site.
    if isinstance(error, StoreUnavailableError):
        fresh = StoreUnavailableError(str(error), retry_after=error.retry_after)
        fresh.__cause__ = cause
        return fresh
    return error
