"""``store._errors``: real driver errors told apart into outages, retryable races and bugs."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from llama_workflows_asgi.errors import StoreUnavailableError
from llama_workflows_asgi.store._errors import is_retryable_conflict, sqlstate, unavailable
from tests.support.waiting import eventually


async def failure_of(engine: AsyncEngine, *statements: str) -> BaseException:
    """The error the statements raise, run in one transaction on ``engine``."""
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    except Exception as error:
        return error
    pytest.fail(f"{statements} ran without an error")


@pytest.fixture
async def postgres(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(postgres_url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id int PRIMARY KEY, n int)"))
        await conn.execute(text("INSERT INTO t VALUES (1, 0)"))
    yield engine
    await engine.dispose()


async def test_a_unique_violation_is_neither_an_outage_nor_retryable(
    postgres: AsyncEngine,
) -> None:
    error = await failure_of(postgres, "INSERT INTO t VALUES (1, 1)")
    assert isinstance(error, sa_exc.IntegrityError)
    assert sqlstate(error) == "23505"
    assert unavailable(error) is None
    assert not is_retryable_conflict(error)


async def test_a_serialization_failure_is_retryable_not_an_outage(postgres: AsyncEngine) -> None:
    async with postgres.connect() as first, postgres.connect() as second:
        await first.execute(text("BEGIN ISOLATION LEVEL REPEATABLE READ"))
        await first.execute(text("SELECT n FROM t"))
        await second.execute(text("UPDATE t SET n = 1"))
        await second.commit()
        with pytest.raises(sa_exc.DBAPIError) as raised:
            await first.execute(text("UPDATE t SET n = 2"))
        await first.rollback()
    assert sqlstate(raised.value) == "40001"
    assert is_retryable_conflict(raised.value)
    assert unavailable(raised.value) is None


async def test_an_unreachable_server_is_an_outage(postgres_url: str) -> None:
    from tests.support.postgres import _free_port

    engine = create_async_engine(
        f"postgresql+asyncpg://postgres@127.0.0.1:{_free_port()}/x", poolclass=NullPool
    )
    try:
        error = await failure_of(engine, "SELECT 1")
    finally:
        await engine.dispose()
    outage = unavailable(error)
    assert isinstance(outage, StoreUnavailableError)
    assert str(outage).startswith("cannot reach the database: ")


async def test_a_terminated_session_is_an_outage(postgres: AsyncEngine) -> None:
    error = await failure_of(postgres, "SELECT pg_terminate_backend(pg_backend_pid())")
    outage = unavailable(error)
    assert isinstance(outage, StoreUnavailableError)
    assert "cannot reach the database" in str(outage)


async def test_an_exhausted_pool_is_an_outage(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}"
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.05)
    try:
        async with engine.connect():
            with pytest.raises(sa_exc.TimeoutError) as raised:
                async with engine.connect():
                    pass
    finally:
        await engine.dispose()
    outage = unavailable(raised.value)
    assert outage is not None
    assert str(outage) == "timed out waiting for a database connection from the pool"


async def test_a_file_locked_by_another_writer_is_an_outage(tmp_path: Path) -> None:
    database = tmp_path / "locked.db"
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("CREATE TABLE t (n int)")
    holder.execute("BEGIN IMMEDIATE")
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{database}", connect_args={"timeout": 0}, poolclass=NullPool
    )
    try:
        error = await failure_of(engine, "INSERT INTO t VALUES (1)")
    finally:
        holder.close()
        await engine.dispose()
    assert str(unavailable(error)) == "database is locked by another process"
    assert sqlstate(error) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sqlite+aiosqlite:///{dir}/missing/dir/x.db", "cannot open the database file"),
        (
            "sqlite+aiosqlite:///file:{dir}/ro.db?mode=ro&uri=true",
            "the database file is read-only",
        ),
    ],
)
async def test_sqlite_messages_give_the_reason(tmp_path: Path, url: str, reason: str) -> None:
    sqlite3.connect(tmp_path / "ro.db").execute("CREATE TABLE t (n int)").connection.close()
    engine = create_async_engine(url.format(dir=tmp_path), poolclass=NullPool)
    try:
        error = await failure_of(engine, "INSERT INTO t VALUES (1)")
    finally:
        await engine.dispose()
        # A connection that failed to open stops its driver thread in the background,
        # reporting to this event loop: let it finish while the loop still runs.
        await eventually(lambda: not _driver_threads(), "the driver threads have stopped")
    assert str(unavailable(error)) == reason


def _driver_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]


def test_other_errors_keep_their_type() -> None:
    known = StoreUnavailableError("already said")
    assert unavailable(known) is known
    assert unavailable(ValueError("a bug")) is None
    assert unavailable(KeyError("x")) is None
    assert sqlstate(ValueError("no code")) is None
    assert not is_retryable_conflict(RuntimeError("no code"))


def test_network_errors_and_timeouts_are_outages() -> None:
    refused = unavailable(ConnectionRefusedError(111, "Connection refused"))
    assert str(refused) == "cannot reach the database: [Errno 111] Connection refused"
    # An exception without a message is described by its type.
    assert str(unavailable(asyncio.TimeoutError())) == "cannot reach the database: TimeoutError"
