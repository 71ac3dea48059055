"""Store fixtures: the same tests run against memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from llama_workflows_asgi.store import (
    AbstractWorkflowStore,
    MemoryWorkflowStore,
    SqlAlchemyWorkflowStore,
    SqliteWorkflowStore,
)
from llama_workflows_asgi.store._batch import GroupCommit
from tests.support.group_commit import Calls, Writer


def make_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AbstractWorkflowStore:
    """A fresh, empty store of ``kind`` (``memory``, ``sqlite`` or ``postgres``)."""
    if kind == "memory":
        return MemoryWorkflowStore(max_completed=None)
    if kind == "sqlite":
        return SqliteWorkflowStore(tmp_path / "handlers.db")
    return SqlAlchemyWorkflowStore(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AbstractWorkflowStore]:
    """Every store implementation, started on an empty database."""
    store = make_store(request.param, request, tmp_path)
    await store.start()
    yield store
    await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def sql_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqlAlchemyWorkflowStore]:
    """The SQL stores only, for what only a database can do (transactions, raw SQL)."""
    store = make_store(request.param, request, tmp_path)
    assert isinstance(store, SqlAlchemyWorkflowStore)
    await store.start()
    yield store
    await store.close()


# -- a group commit on its own (test_batch, test_feed) ----------------------------------


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A SQLite file with the one table of ``tests.support.group_commit``."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'batch.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE kv (k TEXT PRIMARY KEY)"))
    yield engine
    await engine.dispose()


@pytest.fixture
def calls() -> Calls:
    """Each batch function call: its kind and the payloads it was handed."""
    return []


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[Writer]:
    """A group commit over ``engine``, closed after the test."""
    writer = GroupCommit(engine.begin)
    yield writer
    await writer.aclose()
