"""``store._pg_checkout``: pooled connections checked at checkout, pinged only after idling.

And the PostgreSQL reads of ``Engines.reading``, which run outside any transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from llama_workflows_asgi.store._engines import create_engines, normalize_url
from llama_workflows_asgi.store._pg_checkout import ping_when_idle
from tests.support.waiting import eventually

_HOUR = 3600.0


def pinged(engine: AsyncEngine) -> list[int]:
    """Every ping of ``engine``'s dialect, counted on its way to the real one."""
    dialect = engine.sync_engine.dialect
    ping, seen = dialect.do_ping, []

    def counted(dbapi_connection: Any) -> bool:
        seen.append(1)
        return ping(dbapi_connection)

    dialect.do_ping = counted  # type: ignore[method-assign]
    return seen


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT pg_backend_pid()")))


async def driver(conn: AsyncConnection) -> Any:
    return (await conn.get_raw_connection()).driver_connection


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(postgres_url, pool_size=1, max_overflow=0)
    yield engine
    await engine.dispose()


async def test_a_connection_the_server_ended_is_replaced_before_use(engine: AsyncEngine) -> None:
    ping_when_idle(engine, idle=_HOUR)
    pings = pinged(engine)
    pid = await backend_pid(engine)
    async with engine.connect() as conn:
        pooled = await driver(conn)
        other = create_async_engine(engine.url, poolclass=NullPool)
        async with other.connect() as killer:
            assert await killer.scalar(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        await other.dispose()
    await eventually(lambda: bool(pooled.is_closed()), "the driver noticed the termination")
    assert await backend_pid(engine) != pid  # the dead one was never handed out
    assert pings == []  # known dead without a ping


async def test_only_a_connection_back_in_the_pool_for_a_while_is_pinged(
    engine: AsyncEngine,
) -> None:
    ping_when_idle(engine, idle=_HOUR)
    pings = pinged(engine)
    for _ in range(3):
        await backend_pid(engine)
    assert pings == []
    ping_when_idle(engine, idle=0.0)  # every connection now counts as idle
    pid = await backend_pid(engine)
    assert pings != []
    assert await backend_pid(engine) == pid  # it answered, so it was kept


async def test_postgres_reads_run_outside_a_transaction(postgres_url: str) -> None:
    engines = create_engines(normalize_url(postgres_url), busy_timeout=1.0, options={})
    try:
        async with engines.reading() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
            assert not (await driver(conn)).is_in_transaction()  # no BEGIN, no ROLLBACK
        async with engines.read.connect() as conn:  # the isolation level was reset
            await conn.execute(text("SELECT 1"))
            assert (await driver(conn)).is_in_transaction()
    finally:
        await engines.dispose()
