"""SQLite specifics: pragmas, one writer at a time, group commit, outages."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from llama_workflows_asgi.errors import StoreUnavailableError
from llama_workflows_asgi.store import (
    HandlerQuery,
    SqlAlchemyWorkflowStore,
    SqliteWorkflowStore,
)
from tests.support.factories import T0, at, handler, progress
from tests.support.factories import event as stored_event
from tests.support.waiting import eventually


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteWorkflowStore]:
    store = SqliteWorkflowStore(tmp_path / "handlers.db")
    await store.start()
    yield store
    await store.close()


async def pragma(engine: AsyncEngine, name: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()


async def test_pragmas_on_both_engines(tmp_path: Path) -> None:
    store = SqliteWorkflowStore(tmp_path / "p.db", busy_timeout=2.5)
    await store.start()
    try:
        for engine in (store.write_engine, store.read_engine):
            assert await pragma(engine, "journal_mode") == "wal"
            assert await pragma(engine, "synchronous") == 1  # NORMAL
            assert await pragma(engine, "busy_timeout") == 2500
            assert await pragma(engine, "foreign_keys") == 1
        assert store.write_engine is not store.read_engine
        assert store.write_engine.pool.size() == 1  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_writes_begin_immediate_and_reads_begin_deferred(store: SqliteWorkflowStore) -> None:
    seen: dict[str, list[str]] = {"write": [], "read": []}
    for kind, engine in (("write", store.write_engine), ("read", store.read_engine)):
        event.listen(
            engine.sync_engine,
            "before_cursor_execute",
            lambda conn, cursor, statement, *args, log=seen[kind]: log.append(statement),
        )
    await store.create_handler(handler("h"))
    await store.query(HandlerQuery())
    assert seen["write"][0] == "BEGIN IMMEDIATE"
    assert seen["read"][0] == "BEGIN"


async def test_fifty_concurrent_writers(store: SqliteWorkflowStore, tmp_path: Path) -> None:
    other = SqliteWorkflowStore(tmp_path / "handlers.db")  # a second store on the same file
    await other.start()

    async def writer(target: SqlAlchemyWorkflowStore, i: int) -> None:
        h = handler(f"h{i:02}", owner_id=f"o{i}", run_id=f"r{i}")
        await target.create_handler(h)
        for step in range(5):
            events = [stored_event(step * 3 + n) for n in range(3)]
            assert (
                await target.save_progress([progress(h, ctx=f'{{"s":{step}}}', events=events)])
                == set()
            )
        await target.enqueue_event(h.handler_id, f"r{i}", "{}", None, at(i))

    try:
        await asyncio.gather(*(writer(store if i % 2 else other, i) for i in range(50)))
    finally:
        await other.close()
    rows = await store.query(HandlerQuery())
    assert len(rows) == 50
    assert {h.ctx["s"] for h in rows if h.ctx} == {4}
    sequences = await store.last_sequences([f"r{i}" for i in range(50)])
    assert sequences == {f"r{i}": 14 for i in range(50)}
    assert len(await store.read_inbox([h.handler_id for h in rows])) == 50


async def test_group_commit_batches_concurrent_writes(store: SqliteWorkflowStore) -> None:
    rows = [handler(f"h{i}", owner_id="o") for i in range(40)]
    for h in rows:
        await store.create_handler(h)
    commits: list[int] = []
    statements: list[str] = []
    sync_engine = store.write_engine.sync_engine
    event.listen(sync_engine, "commit", lambda conn: commits.append(1))
    event.listen(sync_engine, "after_cursor_execute", lambda *args: statements.append(args[2]))

    results = await asyncio.gather(
        *(
            store.save_progress([progress(h, events=[stored_event(0), stored_event(1)])])
            for h in rows
        )
    )
    assert results == [set()] * 40
    assert 1 <= len(commits) < 10
    # Merged: a few statements per transaction, not a few per call.
    assert len(statements) < 40
    assert len(await store.read_events("run-h39")) == 2


async def test_locked_database_is_unavailable_not_broken(tmp_path: Path) -> None:
    store = SqliteWorkflowStore(tmp_path / "l.db", busy_timeout=0.2)
    await store.start()
    await store.create_handler(handler("before"))
    blocker = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailableError, match="database is locked by another process"):
            await store.create_handler(handler("during"))
        # WAL: readers are not blocked by the writer.
        assert [h.handler_id for h in await store.query(HandlerQuery())] == ["before"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await store.create_handler(handler("after"))
    assert [h.handler_id for h in await store.query(HandlerQuery())] == ["after", "before"]
    await store.close()


async def test_full_disk_fails_the_whole_batch_and_writes_nothing(
    store: SqliteWorkflowStore,
) -> None:
    h = handler("h", owner_id="o")
    await store.create_handler(h)
    # The write engine holds exactly one connection: cap that connection's file size.
    async with store.write_engine.connect() as conn:
        pages = (await conn.exec_driver_sql("PRAGMA page_count")).scalar()
        await conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
    big = '{"x":"' + "y" * 200_000 + '"}'
    results = await asyncio.gather(
        store.create_handler(handler("small")),
        store.save_progress([progress(h, ctx=big, events=[stored_event(0)])]),
        return_exceptions=True,
    )
    for result in results:
        assert isinstance(result, StoreUnavailableError)
        assert "database or disk is full" in str(result)
        assert result.retry_after >= 1
    assert [x.handler_id for x in await store.query(HandlerQuery())] == ["h"]
    assert await store.read_events("run-h") == []
    async with store.write_engine.connect() as conn:
        await conn.exec_driver_sql("PRAGMA max_page_count = 1073741823")
    assert await store.save_progress([progress(h, ctx=big)]) == set()


def sqlite_workers_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """aiosqlite connection threads started after ``before`` and still running."""
    # Unnamed threads are named after their target: ``Thread-7 (_connection_worker_thread)``.
    threads = set(threading.enumerate()) - before
    return [t for t in threads if "_connection_worker_thread" in t.name]


async def test_unopenable_file_is_unavailable(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    store = SqliteWorkflowStore(tmp_path / "missing-dir" / "x.db")
    with pytest.raises(StoreUnavailableError, match="cannot open the database file"):
        await store.start()
    # aiosqlite stops a failed connection's worker thread in the background and
    # reports back to this event loop: let it finish before the loop closes.
    await eventually(lambda: not sqlite_workers_since(before), "aiosqlite's worker thread ended")


async def test_default_is_handlers_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SqlAlchemyWorkflowStore()
    assert store.url.render_as_string() == "sqlite+aiosqlite:///handlers.db"
    await store.create_handler(handler("h"))  # starts by itself
    await store.close()
    assert (tmp_path / "handlers.db").is_file()


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="Unsupported database"):
        SqlAlchemyWorkflowStore("mysql://u@h/db")


async def test_private_memory_database(tmp_path: Path) -> None:
    store = SqlAlchemyWorkflowStore("sqlite+aiosqlite://")
    await store.start()
    await asyncio.gather(*(store.create_handler(handler(f"h{i}")) for i in range(5)))
    assert len(await store.query(HandlerQuery())) == 5
    await store.close()


async def test_host_engine_is_used_as_given(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'host.db'}")
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store = SqlAlchemyWorkflowStore(engine)
    assert store.migrate  # SQLite: migrates by default
    await store.start()
    await store.create_handler(handler("h", owner_id="o"))
    await store.save_progress([progress(handler("h", owner_id="o"), events=[stored_event(0)])])
    await store.close()
    # No pragmas were installed on the host's engine, yet writes took the lock up front.
    assert not any(s.upper().startswith("PRAGMA JOURNAL_MODE") for s in statements)
    assert statements.count("BEGIN IMMEDIATE") >= 2
    async with engine.connect() as conn:  # still open after close()
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "delete"
        count = await conn.scalar(text("SELECT count(*) FROM workflow_events"))
    assert count == 1
    await engine.dispose()


async def test_store_can_start_again_after_close(store: SqliteWorkflowStore) -> None:
    await store.create_handler(handler("a"))
    await store.close()
    await store.start()
    await store.create_handler(handler("b", started_at=T0))
    assert len(await store.query(HandlerQuery())) == 2
