"""Batch functions over a small table of their own, for the group commit's tests (``store._batch``).

Its batch functions write one key per payload, so each test says exactly which
writes shared a transaction, which failed, and what was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from llama_workflows_asgi.errors import ConflictError, StoreUnavailableError
from llama_workflows_asgi.store._batch import BatchFunction, GroupCommit, Outcome, Result

Calls = list[tuple[str, list[str]]]
Writer = GroupCommit[AsyncConnection]


async def keys(engine: AsyncEngine) -> set[str]:
    """The keys written to the table."""
    async with engine.connect() as conn:
        return set((await conn.execute(text("SELECT k FROM kv"))).scalars())


def putter(calls: Calls, kind: str = "put") -> BatchFunction[AsyncConnection, str, int]:
    """A batch function inserting each key; ``taken`` is refused, ``bug`` and ``down`` raise."""

    async def put(conn: AsyncConnection, payloads: list[str]) -> list[Outcome[int]]:
        calls.append((kind, list(payloads)))
        outcomes: list[Outcome[int]] = []
        for key in payloads:
            if key == "bug":
                raise RuntimeError("a faulty write")
            if key == "down":
                raise ConnectionRefusedError("the database is away")
            if key == "taken":
                outcomes.append(ConflictError(f"{key} is taken"))  # nothing written for it
                continue
            await conn.execute(text("INSERT INTO kv VALUES (:k)"), {"k": key})
            outcomes.append(len(key))
        return outcomes

    return put


async def test_concurrent_writes_share_one_transaction(
    writer: Writer, engine: AsyncEngine, calls: Calls
) -> None:
    put = writer.lane(putter(calls))
    names = [f"k{i}" for i in range(20)]

    results = await asyncio.gather(*(put.submit(name) for name in names))

    assert results == [len(name) for name in names]  # each caller gets its own outcome
    assert writer.transactions == 1
    assert calls == [("put", names)]  # consecutive jobs of one kind: one call
    assert await keys(engine) == set(names)


async def test_kinds_keep_their_submission_order(writer: Writer, calls: Calls) -> None:
    put, other = writer.lane(putter(calls)), writer.lane(putter(calls, "other"))

    await asyncio.gather(put.submit("a"), other.submit("b"), put.submit("c"))

    assert calls == [("put", ["a"]), ("other", ["b"]), ("put", ["c"])]
    assert writer.transactions == 1


async def test_a_refused_payload_fails_alone(
    writer: Writer, engine: AsyncEngine, calls: Calls
) -> None:
    put = writer.lane(putter(calls))

    results = await asyncio.gather(
        put.submit("a"),
        put.submit("taken"),
        put.submit("b"),
        return_exceptions=True,
    )

    assert results[0] == 1
    assert results[2] == 1
    assert isinstance(results[1], ConflictError)
    assert writer.transactions == 1  # the refusal did not abort the others' transaction
    assert await keys(engine) == {"a", "b"}


async def test_a_faulty_write_is_found_by_rerunning_each_job_alone(
    writer: Writer, engine: AsyncEngine, calls: Calls
) -> None:
    put = writer.lane(putter(calls))

    results = await asyncio.gather(
        put.submit("a"),
        put.submit("bug"),
        put.submit("b"),
        return_exceptions=True,
    )

    assert results[0] == 1
    assert results[2] == 1
    assert isinstance(results[1], RuntimeError)
    assert calls == [("put", ["a", "bug", "b"]), ("put", ["a"]), ("put", ["bug"]), ("put", ["b"])]
    assert await keys(engine) == {"a", "b"}


async def test_an_outage_fails_every_job_of_the_batch_and_writes_nothing(
    writer: Writer, engine: AsyncEngine, calls: Calls
) -> None:
    put = writer.lane(putter(calls))

    results = await asyncio.gather(put.submit("a"), put.submit("down"), return_exceptions=True)

    assert all(isinstance(r, StoreUnavailableError) for r in results)
    assert results[0] is not results[1]  # each caller raises its own exception
    assert len(calls) == 1  # not re-run: every job would meet the same outage
    assert await keys(engine) == set()
    assert await put.submit("after") == 5  # the writer goes on


async def test_closing_finishes_the_queued_writes_and_a_new_submit_restarts(
    writer: Writer, engine: AsyncEngine, calls: Calls
) -> None:
    put = writer.lane(putter(calls))
    queued = [asyncio.ensure_future(put.submit(f"q{i}")) for i in range(5)]
    await asyncio.sleep(0)  # the submits are queued, not yet written

    await writer.aclose()

    assert all(task.done() for task in queued)
    assert await keys(engine) == {f"q{i}" for i in range(5)}
    assert await put.submit("again") == 5


# -- feeds: payloads pulled when a batch forms -------------------------------------------


class Dirty:
    """A source of keys to write: ``add`` marks one, the writer takes them all at once."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.takes = 0
        self.results: list[tuple[str, object]] = []
        self.given_back: list[list[str]] = []
        self.decided = asyncio.Event()

    def take(self) -> list[str]:
        self.takes += 1
        taken, self.pending = self.pending, []
        return taken

    def settled(self, results: Sequence[tuple[str, Result[int]]]) -> None:
        self.results.extend(results)
        self.decided.set()

    def kept(self, payloads: Sequence[str], error: StoreUnavailableError) -> None:
        self.given_back.append(list(payloads))
        self.pending[:0] = payloads  # nothing dropped: written by a later batch
        self.decided.set()


async def until(source: Dirty, condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, re-checked each time the writer tells ``source`` something."""
    while not condition():
        source.decided.clear()
        await source.decided.wait()
