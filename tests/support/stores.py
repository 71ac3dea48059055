"""Store fixtures: the same tests run on memory, SQLite and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llama_workflows_asgi import MemoryWorkflowStore
from llama_workflows_asgi.store import AbstractWorkflowStore, SqlAlchemyWorkflowStore

StoreFactory = Callable[[], AbstractWorkflowStore]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which store backs the test."""
    return str(request.param)


@pytest.fixture
def database_url(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str | None:
    """A fresh database for the test (``None`` for the memory store)."""
    if store_kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'workflows.db'}"
    if store_kind == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return None


@pytest.fixture
def make_store(database_url: str | None) -> StoreFactory:
    """New store objects on the test's database (a memory store when there is none).

    Calling it twice gives two stores on one database, as two processes (or a
    process and its restart) would have.
    """
    if database_url is None:
        return MemoryWorkflowStore
    url = database_url
    return lambda: SqlAlchemyWorkflowStore(url, migrate=True)
