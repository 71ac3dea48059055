"""Store fixtures: the same tests run against memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llama_workflows_asgi.store import (
    AbstractWorkflowStore,
    MemoryWorkflowStore,
    SqlAlchemyWorkflowStore,
    SqliteWorkflowStore,
)


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
