"""The group commit (``store._batch``), on its own, over a real SQLite file.

Its batch functions here write a small table of their own, so each test says
exactly which writes shared a transaction, which failed, and what was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from llama_workflows_asgi.errors import ConflictError, StoreUnavailableError
from llama_workflows_asgi.store._batch import BatchFunction, GroupCommit, Outcome, Result

pytestmark = pytest.mark.timeout(30)

Calls = list[tuple[str, list[str]]]
Writer = GroupCommit[AsyncConnection]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'batch.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE kv (k TEXT PRIMARY KEY)"))
    yield engine
    await engine.dispose()


@pytest.fixture
def calls() -> Calls:
    """Each batch function call: its kind and the payloads it was handed."""
    return []


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[Writer]:
    writer = GroupCommit(engine.begin)
    yield writer
    await writer.aclose()


async def keys(engine: AsyncEngine) -> set[str]:
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

    await asyncio.wait_for(_until(source, lambda: len(source.results) == 4), 10)

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

    await asyncio.wait_for(_until(source, lambda: bool(source.given_back)), 10)
    assert source.given_back == [["a", "down"]]  # given back whole, nothing written
    assert await keys(engine) == set()
    source.pending.remove("down")  # the database is back
    feed.poke()  # backing off: this poke waits for the backoff's own pull

    await asyncio.wait_for(_until(source, lambda: bool(source.results)), 10)
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


async def _until(source: Dirty, condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, re-checked each time the writer tells ``source`` something."""
    while not condition():
        source.decided.clear()
        await source.decided.wait()
