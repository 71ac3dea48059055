"""The group commit (``store._batch``), on its own, over a real SQLite file.

Its batch functions (``tests.support.group_commit``) write a small table of
their own, so each test says exactly which writes shared a transaction, which
failed, and what was written. The feed's own tests are in ``test_feed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from llama_workflows_asgi.errors import ConflictError, StoreUnavailableError
from llama_workflows_asgi.store._batch import Result
from tests.support.group_commit import Calls, Dirty, Writer, keys, putter

pytestmark = pytest.mark.timeout(30)


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


class _FaultySettling(Dirty):
    """A source whose bookkeeping after the commit raises."""

    def settled(self, results: Sequence[tuple[str, Result[int]]]) -> None:
        super().settled(results)
        raise RuntimeError("a bug in the caller's bookkeeping")


async def test_a_raising_settle_neither_fails_the_batch_nor_stops_the_writer(
    writer: Writer, engine: AsyncEngine, calls: Calls
) -> None:
    source, put = _FaultySettling(), writer.lane(putter(calls, "submitted"))
    feed = writer.feed(putter(calls, "fed"), source)
    source.pending.append("fed")
    feed.poke()

    assert await put.submit("sub") == 3  # settled after the source raised: still answered
    assert source.results == [("fed", 3)]
    assert writer.transactions == 1
    assert await put.submit("next") == 4  # the writer task lives on
    assert await keys(engine) == {"fed", "sub", "next"}
