"""The PostgreSQL writer's kept connection: one checkout for many batches, replaced when
lost, given back when idle or cancelled, never held on a pool without one to spare."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from llama_workflows_asgi.store import HandlerQuery, SqlAlchemyWorkflowStore
from llama_workflows_asgi.store._engines import create_engines, normalize_url
from llama_workflows_asgi.store._pg_writer import HeldConnectionWriter
from tests.support.factories import handler
from tests.support.postgres import run_in_thread
from tests.support.waiting import eventually, parked_in

_HOUR = 3600.0


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(postgres_url, pool_pre_ping=True)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id int PRIMARY KEY)"))
    yield engine
    await engine.dispose()


def count_checkouts(engine: AsyncEngine) -> list[int]:
    seen: list[int] = []

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(*args: Any) -> None:
        seen.append(1)

    return seen


def checked_out(engine: AsyncEngine) -> int:
    return int(engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


def insert(value: int) -> Any:
    async def body(conn: AsyncConnection) -> None:
        await conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})

    return body


async def backend_pid(writer: HeldConnectionWriter) -> int:
    pids: list[int] = []

    async def body(conn: AsyncConnection) -> None:
        pids.append(await conn.scalar(text("SELECT pg_backend_pid()")))

    await writer(body)
    return pids[0]


async def rows(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return list((await conn.scalars(text("SELECT id FROM t ORDER BY id"))).all())


async def test_batches_share_one_checkout_and_commit_each(engine: AsyncEngine) -> None:
    checkouts = count_checkouts(engine)
    writer = HeldConnectionWriter(engine, idle_ping=_HOUR)
    for value in range(5):
        await writer(insert(value))
    assert len(checkouts) == 1
    assert await rows(engine) == [0, 1, 2, 3, 4]  # each batch committed on its own
    await writer.aclose()
    assert checked_out(engine) == 0


async def test_an_idle_connection_is_checked_out_again(engine: AsyncEngine) -> None:
    checkouts = count_checkouts(engine)
    writer = HeldConnectionWriter(engine, idle_ping=0.0)  # always idle: pinged by the pool
    for value in range(3):
        await writer(insert(value))
    assert len(checkouts) == 3
    await writer.aclose()


async def test_a_failed_batch_commits_nothing_and_the_next_runs(engine: AsyncEngine) -> None:
    writer = HeldConnectionWriter(engine, idle_ping=_HOUR)
    await writer(insert(1))

    async def twice(conn: AsyncConnection) -> None:
        await insert(2)(conn)
        await insert(1)(conn)  # duplicate key: the whole batch rolls back

    with pytest.raises(IntegrityError):
        await writer(twice)
    await writer(insert(3))
    assert await rows(engine) == [1, 3]
    await writer.aclose()
    assert checked_out(engine) == 0


async def test_a_failed_last_batch_leaves_nothing_checked_out(engine: AsyncEngine) -> None:
    writer = HeldConnectionWriter(engine, idle_ping=_HOUR)
    await writer(insert(1))
    with pytest.raises(IntegrityError):
        await writer(insert(1))
    await writer.aclose()
    assert checked_out(engine) == 0


async def test_a_terminated_connection_is_replaced(engine: AsyncEngine) -> None:
    writer = HeldConnectionWriter(engine, idle_ping=_HOUR)
    pid = await backend_pid(writer)
    async with engine.connect() as other:
        assert await other.scalar(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    held = writer._conn
    assert held is not None
    raw = (await held.get_raw_connection()).driver_connection
    await eventually(lambda: bool(raw.is_closed()), "the driver noticed the termination")
    await writer(insert(7))  # on a fresh connection, not the dead one
    assert await backend_pid(writer) != pid
    assert await rows(engine) == [7]
    await writer.aclose()


async def test_an_idle_connection_goes_back_to_the_pool(engine: AsyncEngine) -> None:
    writer = HeldConnectionWriter(engine, idle_ping=0.05)
    await writer(insert(1))
    await eventually(lambda: checked_out(engine) == 0, "the idle connection was given back")
    await writer(insert(2))  # checks one out again
    assert await rows(engine) == [1, 2]
    await writer.aclose()
    assert checked_out(engine) == 0


async def sleeping(engine: AsyncEngine, pid: int) -> bool:
    query = text("SELECT query FROM pg_stat_activity WHERE pid = :p AND state = 'active'")
    async with engine.connect() as conn:
        return "pg_sleep" in str(await conn.scalar(query, {"p": pid}))


async def test_a_cancelled_batch_invalidates_the_connection(engine: AsyncEngine) -> None:
    writer = HeldConnectionWriter(engine, idle_ping=_HOUR)
    pid = await backend_pid(writer)
    invalidated: list[int] = []
    event.listen(engine.sync_engine, "invalidate", lambda *args: invalidated.append(1))

    async def stuck(conn: AsyncConnection) -> None:
        await insert(1)(conn)
        await conn.execute(text("SELECT pg_sleep(60)"))

    batch = asyncio.create_task(writer(stuck))
    await eventually(lambda: sleeping(engine, pid), "the batch waits on the server")
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert invalidated  # never handed to the pool for reuse
    assert checked_out(engine) == 0  # but the pool has its checkout back
    await writer(insert(2))
    assert await backend_pid(writer) != pid
    assert await rows(engine) == [2]
    await writer.aclose()
    assert checked_out(engine) == 0


# Its socket cannot be closed through the finished loop; it is closed when collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_drop_cancelled_again_still_gives_the_connection_back(engine: AsyncEngine) -> None:
    writer = HeldConnectionWriter(engine, idle_ping=_HOUR)
    pid = await backend_pid(writer)

    async def stuck(conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT pg_sleep(60)"))

    batch = asyncio.create_task(writer(stuck))
    await eventually(lambda: sleeping(engine, pid), "the batch waits on the server")
    batch.cancel()
    for _ in range(100_000):  # no poll interval: the drop is a round trip or two
        if batch.done() or parked_in(batch, "HeldConnectionWriter._drop"):
            break
        await asyncio.sleep(0)
    assert batch.cancel()  # again, while it gives the connection back
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert checked_out(engine) == 0
    await writer(insert(1))
    await writer.aclose()
    assert checked_out(engine) == 0


async def test_a_connection_of_a_finished_event_loop_is_given_back(engine: AsyncEngine) -> None:
    await engine.dispose()  # the other loop must not get a pooled connection of this one
    writer = HeldConnectionWriter(engine, idle_ping=_HOUR)
    run_in_thread(lambda: writer(insert(1)))  # on a private event loop, closed since
    old = writer._conn  # still referenced: the garbage collector does not return it
    assert old is not None
    assert checked_out(engine) == 1
    await writer(insert(2))
    assert old.invalidated
    assert checked_out(engine) == 1  # the new loop's connection only
    await writer.aclose()
    assert checked_out(engine) == 0
    assert await rows(engine) == [1, 2]
    del old
    gc.collect()


@pytest.mark.parametrize(
    ("options", "holds"),
    [
        ({}, True),
        ({"pool_size": 2, "max_overflow": 0}, True),
        ({"pool_size": 1, "max_overflow": 1}, True),
        ({"pool_size": 1, "max_overflow": 0}, False),
        ({"pool_size": 1, "max_overflow": -1}, True),  # unbounded
        ({"poolclass": NullPool}, True),
    ],
)
async def test_a_pool_without_a_connection_to_spare_gets_no_kept_one(
    options: dict[str, Any], holds: bool
) -> None:
    url = normalize_url("postgresql://user@localhost/db")  # never connected to
    engines = create_engines(url, busy_timeout=1.0, options=options)
    assert isinstance(engines.writer(), HeldConnectionWriter) is holds
    await engines.dispose()


async def test_a_one_connection_pool_reads_while_the_writer_is_idle(postgres_url: str) -> None:
    # A short pool timeout: a connection the writer kept would fail the reads fast.
    options = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2}
    store = SqlAlchemyWorkflowStore(postgres_url, engine_options=options)
    await store.start()
    try:
        await store.create_handler(handler("a"))
        assert [h.handler_id for h in await store.query(HandlerQuery())] == ["a"]
        await store.create_handler(handler("b"))
        await store.ping()
        assert sorted(h.handler_id for h in await store.query(HandlerQuery())) == ["a", "b"]
    finally:
        await store.close()
