"""A feed (``store._feed``): payloads its group commit pulls from a source as a batch forms.

Over a real SQLite file, with the batch functions of ``tests.support.group_commit``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from llama_workflows_asgi.errors import ConflictError, StoreUnavailableError
from llama_workflows_asgi.store import _feed
from llama_workflows_asgi.store._batch import GroupCommit, Outcome
from tests.support.group_commit import Calls, Dirty, Writer, keys, putter, until

Feed = _feed.Feed[AsyncConnection, str, int]

pytestmark = pytest.mark.timeout(30)


async def test_a_feed_is_pulled_once_per_batch_however_often_it_is_poked(
    writer: Writer, engine: AsyncEngine, calls: Calls
) -> None:
    source = Dirty()
    feed = writer.feed(putter(calls), source)
    for key in ("a", "b", "c"):
        source.pending.append(key)
        feed.poke()  # three pokes before the writer runs: one pull

    await asyncio.wait_for(source.decided.wait(), 10)

    assert source.takes == 1
    assert calls == [("put", ["a", "b", "c"])]
    assert source.results == [("a", 1), ("b", 1), ("c", 1)]
    assert writer.transactions == 1
    assert await keys(engine) == {"a", "b", "c"}


async def test_a_feed_and_submitted_writes_share_a_transaction(
    writer: Writer, engine: AsyncEngine, calls: Calls
) -> None:
    source, put = Dirty(), writer.lane(putter(calls, "submitted"))
    feed = writer.feed(putter(calls, "fed"), source)
    source.pending.append("fed")
    feed.poke()

    assert await put.submit("sub") == 3
    await asyncio.wait_for(source.decided.wait(), 10)

    assert calls == [("fed", ["fed"]), ("submitted", ["sub"])]  # queue order
    assert writer.transactions == 1


async def test_a_refused_fed_payload_is_found_and_fails_alone(
    writer: Writer, engine: AsyncEngine, calls: Calls
) -> None:
    source = Dirty()
    feed = writer.feed(putter(calls), source)
    source.pending += ["a", "bug", "taken", "b"]
    feed.poke()

    await asyncio.wait_for(until(source, lambda: len(source.results) == 4), 10)

    outcomes = dict(source.results)
    assert (outcomes["a"], outcomes["b"]) == (1, 1)
    assert isinstance(outcomes["bug"], RuntimeError)
    assert isinstance(outcomes["taken"], ConflictError)
    assert source.given_back == []
    assert await keys(engine) == {"a", "b"}


async def test_an_outage_keeps_fed_payloads_and_pulls_again_after_a_backoff(
    writer: Writer, engine: AsyncEngine, calls: Calls
) -> None:
    source = Dirty()
    feed = writer.feed(putter(calls), source)
    source.pending += ["a", "down"]
    feed.poke()

    await asyncio.wait_for(until(source, lambda: bool(source.given_back)), 10)
    assert source.given_back == [["a", "down"]]  # given back whole, nothing written
    assert await keys(engine) == set()
    source.pending.remove("down")  # the database is back
    feed.poke()  # backing off: this poke waits for the backoff's own pull

    await asyncio.wait_for(until(source, lambda: bool(source.results)), 10)
    assert source.results == [("a", 1)]
    assert await keys(engine) == {"a"}


async def test_a_closed_feed_is_not_pulled(writer: Writer, calls: Calls) -> None:
    source = Dirty()
    feed = writer.feed(putter(calls), source)
    source.pending.append("a")
    feed.poke()
    feed.close()

    await writer.aclose()

    assert source.takes == 0
    assert calls == []


async def test_a_feed_in_its_backoff_is_not_pulled_before_it_is_due(
    writer: Writer, engine: AsyncEngine, calls: Calls
) -> None:
    source = Dirty()
    feed = writer.feed(putter(calls, "fed"), source)
    feed.kept(["x"], StoreUnavailableError("the database is away"))  # an outage: back off
    assert source.pending == ["x"]

    assert feed.take(1) is None  # a batch formed meanwhile leaves it for the timer
    assert source.pending == ["x"]
    assert calls == []
    await until(source, lambda: bool(source.results))  # pulled once the backoff is over
    assert source.results == [("x", 1)]
    assert await keys(engine) == {"x"}


class StillClock:
    """The feed's clock, stopped: a write takes no time, so the wait to coalesce never ends."""

    @staticmethod
    def monotonic() -> float:
        return 100.0


async def written_once(writer: Writer, calls: Calls, monkeypatch: pytest.MonkeyPatch) -> Feed:
    """A feed on a stopped clock whose first pull (``a``) is written: it now waits to coalesce."""
    monkeypatch.setattr(_feed, "time", StillClock)
    source = Dirty()
    feed = writer.feed(putter(calls), source)
    source.pending.append("a")
    feed.poke()
    await until(source, lambda: len(source.results) == 1)
    source.pending.append("b")
    feed.poke()
    assert feed.take(1) is None  # a batch formed now leaves it to its wait
    return feed


async def test_complete_work_is_pulled_without_waiting_to_coalesce(
    writer: Writer, engine: AsyncEngine, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = await written_once(writer, calls, monkeypatch)

    feed.poke(complete=True)  # nothing more will join: no reason to wait
    step = feed.take(1)

    assert step is not None
    async with engine.begin() as conn:
        await step.run(conn)
    step.settle()
    assert await keys(engine) == {"a", "b"}


async def test_complete_work_still_waits_for_the_backoff_after_an_outage(
    writer: Writer, engine: AsyncEngine, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = await written_once(writer, calls, monkeypatch)
    feed.kept(["x"], StoreUnavailableError("the database is away"))  # replaces the wait

    feed.poke(complete=True)

    assert feed.take(1) is None


class SteppedClock:
    """The feed's clock, moved by hand (and by the batch function: its write's duration)."""

    now = 100.0

    @classmethod
    def monotonic(cls) -> float:
        return cls.now


@pytest.mark.parametrize(("coalesce", "waits"), [(1.0, False), (2.0, True)])
async def test_the_wait_to_coalesce_is_the_writes_duration_times_coalesce(
    engine: AsyncEngine, calls: Calls, monkeypatch: pytest.MonkeyPatch, coalesce: float, waits: bool
) -> None:
    monkeypatch.setattr(_feed, "time", SteppedClock)
    writer = GroupCommit(engine.begin, coalesce=coalesce)
    put = putter(calls)

    async def slow_put(conn: AsyncConnection, payloads: list[str]) -> Sequence[Outcome[int]]:
        SteppedClock.now += 0.010  # the write takes 10 ms
        return await put(conn, payloads)

    source = Dirty()
    feed = writer.feed(slow_put, source)
    try:
        source.pending.append("a")
        feed.poke()
        await until(source, lambda: len(source.results) == 1)
        SteppedClock.now += 0.015  # 15 ms after the write: past 1 x 10 ms, short of 2 x 10
        source.pending.append("b")
        feed.poke()
        assert (feed.take(1) is None) is waits
    finally:
        feed.close()
        await writer.aclose()
