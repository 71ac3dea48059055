"""``service.tail``: one read of the event log feeds every stream of runs not executing here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event as sa_event

from llama_workflows_asgi.service.tail import SharedTail, Watch
from llama_workflows_asgi.store import AbstractWorkflowStore, HandlerQuery, StoredEvent
from llama_workflows_asgi.store.sqlalchemy import SqlAlchemyWorkflowStore
from tests.support.factories import LEASE, event, handler, progress
from tests.support.stores import StoreFactory

OWNER = "owner-1"


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[AbstractWorkflowStore]:
    store = make_store()
    await store.start()
    for name in ("a", "b", "c"):
        await store.create_handler(handler(name, owner_id=OWNER, lease_expires_at=LEASE))
    yield store
    await store.close()


async def write(
    store: AbstractWorkflowStore, name: str, *sequences: int, final: bool = False
) -> None:
    h = handler(name, owner_id=OWNER)
    events = [event(s, terminal=final and s == sequences[-1]) for s in sequences]
    status = "completed" if final else "running"
    assert await store.save_progress([progress(h, events=events, status=status)]) == set()


@contextmanager
def event_log_reads(store: AbstractWorkflowStore) -> Iterator[list[str]]:
    """Statements reading the event log (none are seen on the memory store)."""
    seen: list[str] = []
    if not isinstance(store, SqlAlchemyWorkflowStore):
        yield seen
        return
    engine = store.read_engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM workflow_events" in statement:
            seen.append(statement)

    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)


def sequences(events: list[StoredEvent] | None) -> list[int] | None:
    return None if events is None else [e.sequence for e in events]


async def test_one_statement_feeds_every_watch_after_its_own_position(
    store: AbstractWorkflowStore,
) -> None:
    await write(store, "a", 0, 1, 2)
    await write(store, "b", 0, 1)
    tail = SharedTail(store, interval=60)
    early, late = tail.watch("a", "run-a", -1), tail.watch("a", "run-a", 1)
    of_b, of_c = tail.watch("b", "run-b", 0), tail.watch("c", "run-c", -1)
    with event_log_reads(store) as reads:
        await tail.read_once()
    assert tail.reads == 1
    if isinstance(store, SqlAlchemyWorkflowStore):
        assert len(reads) == 1
    assert sequences(await early.next(0)) == [0, 1, 2]
    assert sequences(await late.next(0)) == [2]
    assert sequences(await of_b.next(0)) == [1]
    assert await of_c.next(0) == []  # nothing yet, and not ended
    await write(store, "c", 0)
    await write(store, "a", 3)
    await tail.read_once()
    assert sequences(await of_c.next(0)) == [0]
    assert sequences(await early.next(0)) == sequences(await late.next(0)) == [3]
    assert await of_b.next(0) == []


async def test_a_watch_gets_every_event_once_in_order_until_it_is_dropped(
    store: AbstractWorkflowStore,
) -> None:
    tail = SharedTail(store, interval=0.01)
    tail.start()
    try:
        watch = tail.watch("a", "run-a", -1)
        got: list[int] = []
        for batch in ([0], [1, 2], [3], [4, 5, 6]):
            await write(store, "a", *batch)
            while len(got) < batch[-1] + 1:
                got += sequences(await watch.next(5)) or []
        assert got == list(range(7))
        tail.unwatch(watch)
        assert tail.watched == 0
        await write(store, "a", 7)
        await tail.read_once()
        assert watch.events == []  # no longer fed
    finally:
        await tail.stop()


async def test_a_written_event_wakes_the_tail_without_waiting_for_its_interval(
    store: AbstractWorkflowStore,
) -> None:
    await store.notifications.start()  # LISTEN on PostgreSQL; nothing to do elsewhere
    tail = SharedTail(store, interval=3600)
    tail.start()
    try:
        watch = tail.watch("a", "run-a", -1)
        await asyncio.sleep(0)  # the tail's first wait begins
        reads = tail.reads
        await write(store, "a", 0, 1)
        # Only a wakeup can bring these before the hour-long interval is over.
        assert sequences(await asyncio.wait_for(watch.next(3600), 30)) == [0, 1]
        assert tail.reads > reads
    finally:
        await tail.stop()


async def test_watches_of_deleted_runs_and_of_runs_finished_before_the_cursor_end(
    store: AbstractWorkflowStore,
) -> None:
    await write(store, "a", 0)
    await write(store, "b", 0, 1, final=True)
    tail = SharedTail(store, interval=60)
    deleted, past_the_end = tail.watch("a", "run-a", 0), tail.watch("b", "run-b", 1)
    before_the_end = tail.watch("b", "run-b", 0)
    running = tail.watch("c", "run-c", -1)
    await store.delete(HandlerQuery(handler_id_in=["a"]))
    await tail.read_once(check_rows=True)
    assert await deleted.next(0) is None
    assert await past_the_end.next(0) is None
    assert sequences(await before_the_end.next(0)) == [1]  # its final event, then the end
    assert await running.next(0) == []
    await tail.read_once(check_rows=True)
    assert await before_the_end.next(0) is None  # (a stream would have ended on its own)
    assert tail.watched == 1


async def test_stop_ends_every_watch(store: AbstractWorkflowStore) -> None:
    tail = SharedTail(store, interval=60)
    tail.start()
    watches: list[Watch] = [tail.watch(name, f"run-{name}", -1) for name in ("a", "b")]
    waiting = asyncio.ensure_future(watches[0].next(3600))
    await tail.stop()
    assert await asyncio.wait_for(waiting, 5) is None
    assert await watches[1].next(0) is None
