"""``store._sqlite_writer``: SQLite batches in the loop's thread, never waiting there.

Each test runs batch bodies through :func:`in_loop` on a real SQLite file,
with the engines the store creates for it, and looks at the file with a
connection of its own (what is committed, when, what the database file holds)
and at the write connection's own trace of its statements (which thread ran
each, the settings it ran with).
"""

from __future__ import annotations

import asyncio
import os
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
from llama_workflows_asgi.store._sqlite_writer import _Checkpoints, in_loop
from tests.support.waiting import eventually

Writer = Transact[AsyncConnection]
INSERT = text("INSERT INTO item (name) VALUES (:name)")


BUSY_TIMEOUT = 0.2


@pytest.fixture
def busy_timeout() -> float:
    return BUSY_TIMEOUT


@pytest.fixture
async def engines(tmp_path: Path, busy_timeout: float) -> AsyncIterator[Engines]:
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as setup:
        setup.execute(
            "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, data BLOB)"
        )
    url = normalize_url(f"sqlite:///{path}")
    engines = create_engines(url, busy_timeout=busy_timeout, options={})
    yield engines
    await engines.dispose()


@pytest.fixture
def transact(engines: Engines) -> Writer:
    return in_loop(engines.write, "BEGIN IMMEDIATE")


def names_on_disk(engines: Engines) -> list[str]:
    """What another connection sees in the file: committed rows only."""
    database = engines.write.url.database
    assert database is not None
    with sqlite3.connect(database) as other:
        return [name for (name,) in other.execute("SELECT name FROM item ORDER BY id")]


async def traced(engines: Engines) -> list[tuple[str, int]]:
    """Every statement the write connection runs from now on, pragmas included, with
    the thread that ran it (SQLite's own trace, which sees what SQLAlchemy does not)."""
    seen: list[tuple[str, int]] = []
    async with engines.write.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        driver._conn.set_trace_callback(lambda sql: seen.append((sql, threading.get_ident())))
    return seen


async def pragma(engines: Engines, name: str) -> Any:
    """The write connection's ``name`` setting, read by a statement of its own."""
    async with engines.write.connect() as conn:
        return await conn.scalar(text(f"PRAGMA {name}"))


def file_size(engines: Engines) -> int:
    """The database file's size: what checkpoints have written back to it."""
    database = engines.write.url.database
    assert database is not None
    return os.path.getsize(database)


def recorded(engines: Engines, name: str) -> list[Any]:
    """The arguments of every ``name`` event the write engine announces, from now on."""
    seen: list[Any] = []
    event.listen(engines.write.sync_engine, name, lambda *args: seen.append(args))
    return seen


def threads_of(trace: list[tuple[str, int]], prefix: str) -> list[int]:
    """The thread of each traced statement starting with ``prefix``."""
    return [thread for sql, thread in trace if sql.startswith(prefix)]


def _insert(name: str, data: bytes | None = None) -> Any:
    async def body(conn: AsyncConnection) -> None:
        statement = text("INSERT INTO item (name, data) VALUES (:n, :d)")
        await conn.execute(statement, {"n": name, "d": data})

    return body


async def warmed(transact: Writer) -> None:
    """The first two batches: they checkpoint in the driver's thread, the first starting the
    log (synced), the second learning how many pages a commit writes."""
    await transact(_insert("warm-1"))
    await transact(_insert("warm-2"))


@pytest.fixture(params=["in the loop", "in the driver's thread"])
async def placed(
    request: pytest.FixtureRequest, engines: Engines, transact: Writer
) -> AsyncIterator[int]:
    """Where the test's batches run: after the first two (in the loop's thread), or as the
    first (in the driver's thread, after its checkpoint). Yields how many rows came before,
    and checks every INSERT the test sent ran there."""
    skip = 0
    if request.param == "in the loop":
        await warmed(transact)
        skip = 2
    trace = await traced(engines)
    yield skip
    inserts = threads_of(trace, "INSERT")
    assert inserts, "the test sent no INSERT"
    here = threading.get_ident()
    if skip:
        assert inserts[0] == here
    else:
        assert inserts[0] != here


async def test_a_batch_commits_once_before_the_writer_hears_back(
    engines: Engines, transact: Writer
) -> None:
    await warmed(transact)
    commits = recorded(engines, "commit")
    statements = recorded(engines, "before_cursor_execute")

    async def body(conn: AsyncConnection) -> None:
        await conn.execute(INSERT, [{"name": "a"}, {"name": "b"}])
        await conn.execute(INSERT, {"name": "c"})
        assert names_on_disk(engines)[2:] == []  # nothing is visible inside the batch

    await transact(body)
    assert len(commits) == 1
    assert names_on_disk(engines)[2:] == ["a", "b", "c"]  # durable when the call returns
    assert sum("INSERT" in args[2] for args in statements) == 2


async def test_the_first_batches_checkpoint_in_the_drivers_thread_then_run_there(
    engines: Engines, transact: Writer
) -> None:
    trace = await traced(engines)
    await warmed(transact)
    loop_thread = threading.get_ident()
    checkpoints = threads_of(trace, "PRAGMA wal_checkpoint")
    assert len(checkpoints) == 2
    assert loop_thread not in checkpoints
    # Each batch after its checkpoint, in the same hand-off: a log started over syncs.
    assert threads_of(trace, "BEGIN IMMEDIATE") == checkpoints
    assert threads_of(trace, "INSERT") == checkpoints
    await transact(_insert("third"))
    assert threads_of(trace, "INSERT")[-1] == loop_thread
    assert names_on_disk(engines) == ["warm-1", "warm-2", "third"]


async def test_batches_run_in_the_loops_thread_with_the_stores_pragmas(
    engines: Engines, transact: Writer
) -> None:
    await warmed(transact)
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
        pragmas["wal_autocheckpoint"] = await conn.scalar(text("PRAGMA wal_autocheckpoint"))

    await transact(body)
    await transact(body)
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": 200,  # the store's, back once the lock was taken without waiting
        "foreign_keys": 1,
        "wal_autocheckpoint": 0,  # a commit in the loop never checkpoints
    }
    assert threads == {threading.get_ident()}
    # The connection's other users (a prune, a migration) get SQLite's autocheckpoint.
    assert await pragma(engines, "wal_autocheckpoint") == 1000
    assert await pragma(engines, "busy_timeout") == 200


@pytest.mark.parametrize("busy_timeout", [10.0])
async def test_a_batch_waits_for_a_taken_lock_in_the_drivers_thread_not_in_the_loop(
    engines: Engines, transact: Writer
) -> None:
    await warmed(transact)
    trace = await traced(engines)
    rollbacks = recorded(engines, "rollback")
    database = engines.write.url.database
    assert database is not None
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process's write transaction
    loop_thread = threading.get_ident()

    def begins() -> list[int]:
        return threads_of(trace, "BEGIN IMMEDIATE")

    writing: asyncio.Future[None] = asyncio.ensure_future(transact(_insert("waited")))
    try:
        # Tried once here without waiting, then waited for in another thread...
        await eventually(lambda: len(begins()) == 2, "the batch waits in the driver's thread")
        assert begins()[0] == loop_thread
        assert begins()[1] != loop_thread
        # ... while the loop goes on (this test runs in it) and nothing is written.
        assert not writing.done()
        assert names_on_disk(engines)[2:] == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await writing
    assert names_on_disk(engines)[2:] == ["waited"]
    assert threads_of(trace, "INSERT") == [begins()[1]]
    assert rollbacks == []  # the lock found taken left no transaction to roll back
    assert await pragma(engines, "busy_timeout") == 10_000
    # The next batch, the lock free, is the loop's again.
    await transact(_insert("after"))
    assert threads_of(trace, "INSERT")[-1] == loop_thread
    assert names_on_disk(engines)[2:] == ["waited", "after"]


async def test_the_log_is_checkpointed_in_the_drivers_thread_never_in_a_loops_commit(
    engines: Engines, transact: Writer
) -> None:
    await warmed(transact)
    trace = await traced(engines)
    loop_thread = threading.get_ident()
    before = file_size(engines)
    # 5 MB in one commit: past the 1,000 pages (4 MB) at which SQLite's own
    # autocheckpoint writes the log back into the file inside the commit.
    await transact(_insert("big", os.urandom(5 << 20)))
    assert threads_of(trace, "INSERT") == [loop_thread]
    assert file_size(engines) == before  # still all in the log
    assert threads_of(trace, "PRAGMA wal_checkpoint") == []

    # The log grew by more than 1,000 pages: the next batch checkpoints first, and
    # runs after it in the driver's thread.
    await transact(_insert("next"))
    checkpoints = threads_of(trace, "PRAGMA wal_checkpoint")
    assert len(checkpoints) == 1
    assert checkpoints[0] != loop_thread
    assert threads_of(trace, "INSERT")[-1] == checkpoints[0]
    assert file_size(engines) > 5 << 20  # written back into the database file
    assert names_on_disk(engines)[2:] == ["big", "next"]


async def test_small_commits_checkpoint_once_they_fill_about_a_thousand_pages(
    engines: Engines, transact: Writer
) -> None:
    trace = await traced(engines)
    data = os.urandom(40_000)  # about ten pages a commit
    for n in range(2):  # the first two checkpoint (see ``warmed``)
        await transact(_insert(f"warm-{n}", data))
    commits_between: list[int] = []
    count = 0
    for n in range(250):
        before = len(threads_of(trace, "PRAGMA wal_checkpoint"))
        await transact(_insert(f"row-{n}", data))
        count += 1
        if len(threads_of(trace, "PRAGMA wal_checkpoint")) > before:
            commits_between.append(count)
            count = 0
    # About a hundred commits of ten pages between two checkpoints, never one a commit.
    assert len(commits_between) >= 2
    assert all(60 <= between <= 120 for between in commits_between), commits_between


async def test_a_log_outside_wal_mode_writes_in_the_drivers_thread(
    engines: Engines, transact: Writer
) -> None:
    # A file where WAL is not to be had (a network file system) keeps its rollback
    # journal: a commit there takes the file's exclusive lock and syncs it.
    async with engines.write.connect() as conn:
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is not None
        (mode,) = raw.driver_connection._conn.execute("PRAGMA journal_mode = DELETE").fetchone()
        assert mode == "delete"
    trace = await traced(engines)
    for n in range(3):
        await transact(_insert(f"row-{n}"))
    inserts = threads_of(trace, "INSERT")
    assert len(inserts) == 3
    assert threading.get_ident() not in inserts
    assert threads_of(trace, "PRAGMA wal_checkpoint") == []
    assert names_on_disk(engines) == ["row-0", "row-1", "row-2"]


def test_checkpoints_are_spaced_by_what_the_last_commits_wrote() -> None:
    pages = _Checkpoints(target=1000, page_size=4096)
    assert pages.due(log_size=0)  # the first batch starts the log
    pages.checkpointed(0, log_size=0)  # an empty log teaches nothing
    assert pages.every == 1
    pages.committed()
    pages.checkpointed(20, log_size=80_000)  # one commit of 20 pages
    assert pages.every == 50
    for _ in range(49):
        pages.committed()
        assert not pages.due(log_size=80_000)
    pages.committed()
    assert pages.due(log_size=80_000)
    pages.checkpointed(None, log_size=80_000)  # failed, or busy: tried again as late
    assert (pages.every, pages.since) == (50, 0)
    # The log file growing by 1,000 pages past its size at the last checkpoint.
    assert not pages.due(log_size=80_000 + 999 * 4096)
    assert pages.due(log_size=80_000 + 1000 * 4096)
    pages.checkpointed(5000, log_size=5_000_000)  # one commit of 5,000 pages, at most
    assert pages.every == 1


async def test_a_failed_statement_rolls_the_batch_back_and_the_connection_stays_usable(
    engines: Engines, transact: Writer, placed: int
) -> None:
    rollbacks = recorded(engines, "rollback")

    async def clashing(conn: AsyncConnection) -> None:
        await conn.execute(INSERT, {"name": "first"})
        await conn.execute(INSERT, {"name": "first"})

    with pytest.raises(IntegrityError):
        await transact(clashing)
    assert len(rollbacks) == 1
    assert names_on_disk(engines)[placed:] == []
    assert await pragma(engines, "wal_autocheckpoint") == 1000
    assert await pragma(engines, "busy_timeout") == 200

    async def fine(conn: AsyncConnection) -> None:
        await conn.execute(INSERT, {"name": "second"})

    await transact(fine)
    assert names_on_disk(engines)[placed:] == ["second"]


async def test_a_savepoint_undoes_its_own_part_only(
    engines: Engines, transact: Writer, placed: int
) -> None:
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
    assert names_on_disk(engines)[placed:] == ["kept", "after"]


async def test_a_body_awaiting_anything_but_its_connection_writes_nothing(
    engines: Engines, transact: Writer, placed: int
) -> None:
    async def body(conn: AsyncConnection) -> None:
        await conn.execute(INSERT, {"name": "never"})
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited something other than its connection"):
        await transact(body)
    assert names_on_disk(engines)[placed:] == []
    await transact(_insert("next"))  # the connection, dropped, is replaced
    assert names_on_disk(engines)[placed:] == ["next"]


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
