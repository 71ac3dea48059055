"""``store._sql_lifecycle``: a SQL store's engines, schema, writer and the parts its URL decides.

On SQLite files and a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llama_workflows_asgi.errors import SchemaError
from llama_workflows_asgi.store import (
    HandlerQuery,
    SqlAlchemyWorkflowStore,
    SqliteWorkflowStore,
)
from llama_workflows_asgi.store._liveness_pg import PostgresLiveness
from llama_workflows_asgi.store._notify_pg import PostgresNotifications
from llama_workflows_asgi.store.liveness import FileLockLiveness, LocalLiveness
from llama_workflows_asgi.store.notifications import Notifications
from tests.support.factories import event, handler, progress
from tests.support.postgres import PostgresServer


def test_the_url_decides_migrations_liveness_and_wakeups(tmp_path: Path) -> None:
    postgres = SqlAlchemyWorkflowStore("postgresql://app:pw@db.internal/app")
    assert (
        repr(postgres) == "SqlAlchemyWorkflowStore('postgresql+asyncpg://app:***@db.internal/app')"
    )
    assert postgres.migrate is False  # migrations belong to the deployment
    assert isinstance(postgres.liveness, PostgresLiveness)
    assert isinstance(postgres.notifications, PostgresNotifications)
    assert postgres.notifications.remote
    on_file = SqliteWorkflowStore(tmp_path / "f.db")
    assert on_file.url.render_as_string() == f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
    assert on_file.migrate is True
    assert isinstance(on_file.liveness, FileLockLiveness)
    assert type(on_file.notifications) is Notifications
    assert not on_file.notifications.remote
    in_memory = SqlAlchemyWorkflowStore("sqlite://")
    assert isinstance(in_memory.liveness, LocalLiveness)
    assert SqlAlchemyWorkflowStore("sqlite://", migrate=False).migrate is False


async def test_engines_exist_only_while_started(tmp_path: Path) -> None:
    store = SqliteWorkflowStore(tmp_path / "s.db")
    with pytest.raises(RuntimeError, match="is not started"):
        _ = store.write_engine
    assert store.commits == 0
    await asyncio.gather(store.start(), store.start(), store.start())
    engine = store.write_engine
    await store.start()
    assert store.write_engine is engine  # started once
    await store.close()
    await store.close()  # twice is harmless
    with pytest.raises(RuntimeError, match="is not started"):
        _ = store.read_engine
    assert await store.query(HandlerQuery()) == []  # a read starts it again
    assert store.read_engine is not engine
    await store.close()


async def test_a_refused_schema_leaves_the_store_stopped(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database(migrated=False)
    refusing = SqlAlchemyWorkflowStore(url)
    with pytest.raises(SchemaError, match="missing"):
        await refusing.start()
    with pytest.raises(RuntimeError, match="is not started"):
        _ = refusing.write_engine
    migrating = SqlAlchemyWorkflowStore(url, migrate=True)
    await migrating.start()
    await refusing.start()  # the schema is there now
    await refusing.create_handler(handler("h"))
    assert [h.handler_id for h in await migrating.query(HandlerQuery())] == ["h"]
    await refusing.close()
    await migrating.close()


async def test_commits_count_group_commit_transactions(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    before = sql_store.commits
    await sql_store.create_handler(handler("h", owner_id="me"))
    await sql_store.save_progress([])  # nothing to write: no transaction
    await sql_store.save_progress([progress(handler("h", owner_id="me"), events=[event(0)])])
    assert sql_store.commits == before + 2
