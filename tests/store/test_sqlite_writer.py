"""``store._sqlite_writer``: a whole SQLite batch in one call to the driver's thread.

Each test runs batch bodies through :func:`in_driver_thread` on a real SQLite
file, with the engines the store creates for it, and looks at the file with a
connection of its own: what is committed, when, and in which thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from llama_workflows_asgi.errors import StoreUnavailableError
from llama_workflows_asgi.store._batch import Transact
from llama_workflows_asgi.store._engines import Engines, create_engines, normalize_url
from llama_workflows_asgi.store._errors import unavailable
from llama_workflows_asgi.store._sqlite_writer import in_driver_thread

Writer = Transact[AsyncConnection]
INSERT = text("INSERT INTO item (name) VALUES (:name)")


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[Engines]:
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
    engines = create_engines(normalize_url(f"sqlite:///{path}"), busy_timeout=0.2, options={})
    yield engines
    await engines.dispose()


@pytest.fixture
def transact(engines: Engines) -> Writer:
    return in_driver_thread(engines.write, "BEGIN IMMEDIATE")


def names_on_disk(engines: Engines) -> list[str]:
    """What another connection sees in the file: committed rows only."""
    database = engines.write.url.database
    assert database is not None
    with sqlite3.connect(database) as other:
        return [name for (name,) in other.execute("SELECT name FROM item ORDER BY id")]


def recorded(engines: Engines, name: str) -> list[Any]:
    """The arguments of every ``name`` event the write engine announces, from now on."""
    seen: list[Any] = []
    event.listen(engines.write.sync_engine, name, lambda *args: seen.append(args))
    return seen


async def test_a_batch_commits_once_before_the_writer_hears_back(
    engines: Engines, transact: Writer
) -> None:
    commits = recorded(engines, "commit")
    statements = recorded(engines, "before_cursor_execute")

    async def body(conn: AsyncConnection) -> None:
        await conn.execute(INSERT, [{"name": "a"}, {"name": "b"}])
        await conn.execute(INSERT, {"name": "c"})
        assert names_on_disk(engines) == []  # nothing is visible inside the batch

    await transact(body)
    assert len(commits) == 1
    assert names_on_disk(engines) == ["a", "b", "c"]  # durable when the call returns
    sql = [args[2] for args in statements]
    assert sql[0] == "BEGIN IMMEDIATE"
    assert sum("INSERT" in s for s in sql) == 2


async def test_the_batch_runs_in_the_drivers_thread_with_the_stores_pragmas(
    engines: Engines, transact: Writer
) -> None:
    threads: set[int] = set()
    event.listen(
        engines.write.sync_engine,
        "before_cursor_execute",
        lambda *args: threads.add(threading.get_ident()),
    )
    pragmas: dict[str, Any] = {}

    async def body(conn: AsyncConnection) -> None:
        for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys"):
            pragmas[name] = await conn.scalar(text(f"PRAGMA {name}"))

    await transact(body)
    await transact(body)  # the same connection, and thread, for the next batch
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": 200,
        "foreign_keys": 1,
    }
    assert len(threads) == 1
    assert threading.get_ident() not in threads  # not the event loop's thread


async def test_a_failed_statement_rolls_the_batch_back_and_the_connection_stays_usable(
    engines: Engines, transact: Writer
) -> None:
    rollbacks = recorded(engines, "rollback")

    async def clashing(conn: AsyncConnection) -> None:
        await conn.execute(INSERT, {"name": "first"})
        await conn.execute(INSERT, {"name": "first"})

    with pytest.raises(IntegrityError):
        await transact(clashing)
    assert len(rollbacks) == 1
    assert names_on_disk(engines) == []

    async def fine(conn: AsyncConnection) -> None:
        await conn.execute(INSERT, {"name": "second"})

    await transact(fine)
    assert names_on_disk(engines) == ["second"]


async def test_a_savepoint_undoes_its_own_part_only(engines: Engines, transact: Writer) -> None:
    async def clash(conn: AsyncConnection) -> None:
        async with conn.begin_nested():
            await conn.execute(INSERT, {"name": "undone"})
            await conn.execute(INSERT, {"name": "kept"})

    async def body(conn: AsyncConnection) -> None:
        await conn.execute(INSERT, {"name": "kept"})
        with pytest.raises(IntegrityError):
            await clash(conn)
        await conn.execute(INSERT, {"name": "after"})

    await transact(body)
    assert names_on_disk(engines) == ["kept", "after"]


async def test_a_body_awaiting_anything_but_its_connection_writes_nothing(
    engines: Engines, transact: Writer
) -> None:
    async def body(conn: AsyncConnection) -> None:
        await conn.execute(INSERT, {"name": "never"})
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited something other than its connection"):
        await transact(body)
    assert names_on_disk(engines) == []


async def test_a_locked_file_is_an_outage_and_writing_resumes_once_it_is_free(
    engines: Engines, transact: Writer
) -> None:
    async def body(conn: AsyncConnection) -> None:
        await conn.execute(INSERT, {"name": "late"})

    database = engines.write.url.database
    assert database is not None
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(OperationalError) as failed:
            await transact(body)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    outage = unavailable(failed.value)
    assert isinstance(outage, StoreUnavailableError)
    assert "locked" in str(outage)
    await transact(body)
    assert names_on_disk(engines) == ["late"]
