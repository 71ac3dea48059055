"""``store._engines``: URLs mapped onto async drivers, and the engines made for them."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from llama_workflows_asgi.store._engines import (
    DEFAULT_URL,
    Engines,
    create_engines,
    dedicated_engine,
    is_memory_sqlite,
    normalize_url,
    safe_url,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_urls_map_to_async_drivers(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string() == expected
    assert normalize_url(make_url(given)).render_as_string() == expected


@pytest.mark.parametrize("url", ["mysql://u@h/db", "oracle://u@h/db", "mssql+pyodbc://u@h/db"])
def test_other_databases_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="Unsupported database"):
        normalize_url(url)


def test_default_url_is_handlers_db_here() -> None:
    assert normalize_url(DEFAULT_URL).database == "handlers.db"


@pytest.mark.parametrize(
    ("url", "private"),
    [
        ("sqlite+aiosqlite://", True),
        ("sqlite+aiosqlite:///:memory:", True),
        ("sqlite+aiosqlite:///x.db", False),
        ("postgresql+asyncpg://u@h/db", False),
    ],
)
def test_private_memory_databases_are_recognised(url: str, private: bool) -> None:
    assert is_memory_sqlite(make_url(url)) is private


def test_safe_url_hides_the_password() -> None:
    shown = safe_url("postgresql+asyncpg://user:s3cret@db:5432/app")
    assert "s3cret" not in shown
    assert shown == "postgresql+asyncpg://user:***@db:5432/app"
    assert safe_url(make_url("sqlite+aiosqlite:///x.db")) == "sqlite+aiosqlite:///x.db"


@pytest.fixture
async def sqlite_engines(tmp_path: Path) -> AsyncIterator[Engines]:
    url = normalize_url(f"sqlite:///{tmp_path / 'engines.db'}")
    engines = create_engines(url, busy_timeout=1.5, options={"pool_size": 3})
    yield engines
    await engines.dispose()


async def pragma(engine: AsyncEngine, name: str) -> object:
    async with engine.connect() as conn:
        return (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()


async def test_a_sqlite_file_gets_a_single_connection_writer_and_a_reader(
    sqlite_engines: Engines,
) -> None:
    assert sqlite_engines.dialect == "sqlite"
    assert sqlite_engines.owned
    assert sqlite_engines.write is not sqlite_engines.read
    assert sqlite_engines.write.pool.size() == 1  # type: ignore[attr-defined]
    assert sqlite_engines.read.pool.size() == 3  # type: ignore[attr-defined]
    # Its batches run in the loop's thread, so the feed waits twice a write's time.
    assert sqlite_engines.writes_in_loop
    assert sqlite_engines.coalesce == 2.0
    for engine in (sqlite_engines.write, sqlite_engines.read):
        assert await pragma(engine, "journal_mode") == "wal"
        assert await pragma(engine, "busy_timeout") == 1500
        assert await pragma(engine, "foreign_keys") == 1


async def test_a_write_transaction_holds_the_write_lock_from_its_start(
    sqlite_engines: Engines, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "engines.db", timeout=0, isolation_level=None)
    try:
        async with sqlite_engines.transaction() as conn:
            await conn.execute(text("SELECT 1"))  # a read only: the lock is taken anyway
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released by the commit
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_private_memory_database_shares_one_engine() -> None:
    engines = create_engines(normalize_url("sqlite://"), busy_timeout=1, options={})
    try:
        async with engines.transaction() as conn:
            await conn.execute(text("CREATE TABLE t (n int)"))
            await conn.execute(text("INSERT INTO t VALUES (7)"))
        assert engines.read is engines.write
        async with engines.read.connect() as conn:
            assert await conn.scalar(text("SELECT n FROM t")) == 7
        # Its connection is bound to the driver's thread, where its batches run.
        assert (engines.writes_in_loop, engines.coalesce) == (False, 1.0)
    finally:
        await engines.dispose()


async def test_a_hosts_sqlite_engine_is_locked_up_front_and_never_disposed(
    tmp_path: Path,
) -> None:
    database = tmp_path / "host.db"
    host = create_async_engine(f"sqlite+aiosqlite:///{database}")
    engines = Engines(host, host, owned=False)
    other = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        async with engines.transaction() as conn:
            await conn.execute(text("SELECT 1"))
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        # The host's engine is written as the host set it up: by SQLAlchemy's async API.
        assert not engines.writes_in_loop
        assert engines.coalesce == 1.0
        pool = host.pool
        await engines.dispose()
        assert host.pool is pool  # a host's engine keeps its pool
        async with host.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        other.close()
        await host.dispose()


async def test_owned_engines_are_disposed(sqlite_engines: Engines) -> None:
    async with sqlite_engines.read.connect() as conn:
        await conn.execute(text("SELECT 1"))
    pools = sqlite_engines.write.pool, sqlite_engines.read.pool
    await sqlite_engines.dispose()
    assert sqlite_engines.write.pool is not pools[0]
    assert sqlite_engines.read.pool is not pools[1]


async def test_postgres_gets_one_engine_for_reads_and_writes(postgres_url: str) -> None:
    engines = create_engines(normalize_url(postgres_url), busy_timeout=1, options={})
    try:
        assert engines.dialect == "postgresql"
        assert engines.read is engines.write
        assert (engines.writes_in_loop, engines.coalesce) == (False, 1.0)
        async with engines.transaction() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await engines.dispose()


async def test_a_dedicated_session_names_itself_outside_the_pool(postgres_url: str) -> None:
    given = {"server_settings": {"search_path": "public"}}
    engine = dedicated_engine(normalize_url(postgres_url), given, "twins probe")
    try:
        assert isinstance(engine.pool, NullPool)
        async with engine.connect() as conn:
            assert await conn.scalar(text("SHOW application_name")) == "twins probe"
            assert await conn.scalar(text("SHOW search_path")) == "public"
    finally:
        await engine.dispose()
    assert given == {"server_settings": {"search_path": "public"}}  # the caller's is not changed
