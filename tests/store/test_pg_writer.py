"""The PostgreSQL writer's kept connection: one checkout for many batches, replaced when lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from llama_workflows_asgi.store._pg_writer import HeldConnectionWriter
from tests.support.waiting import eventually

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
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


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
