"""A running service on a fresh store, for the tests of one room each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from llama_workflows_asgi import MemoryWorkflowStore, ServiceConfig, WorkflowService
from llama_workflows_asgi.store import AbstractWorkflowStore, SqlAlchemyWorkflowStore
from tests.support.workflows import make_workflows

FAST = ServiceConfig(lease_ttl=3.0, poll_interval=0.1, stream_poll_interval=0.05)
"""Short leases and polls: ownership rounds and store polls happen within a test."""

ServiceFactory = Callable[..., WorkflowService]


def serving(store: AbstractWorkflowStore, config: ServiceConfig = FAST) -> WorkflowService:
    """A service (not started) on ``store`` with every test workflow registered."""
    service = WorkflowService(store, config=config)
    for name, workflow in make_workflows().items():
        service.add_workflow(name, workflow)
    return service


@pytest.fixture
async def memory_service() -> AsyncIterator[WorkflowService]:
    """A running service on a memory store."""
    async with serving(MemoryWorkflowStore()).running_context() as service:
        yield service


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database two services (two processes, in effect) can share."""
    return f"sqlite+aiosqlite:///{tmp_path / 'rooms.db'}"


def sqlite_store(url: str) -> SqlAlchemyWorkflowStore:
    """A new store object on ``url``, as another process would open it."""
    return SqlAlchemyWorkflowStore(url)
