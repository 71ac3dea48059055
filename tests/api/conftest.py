"""Fixtures for the HTTP API suites."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from llama_workflows_asgi import WorkflowServer
from tests.support.rows import CountRows, row_counter
from tests.support.servers import serving
from tests.support.stores import StoreFactory
from tests.support.workflows import make_workflows


@pytest.fixture
def workflow_server(make_store: StoreFactory) -> WorkflowServer:
    """A ``WorkflowServer`` with the test workflows (not started)."""
    server = WorkflowServer(make_store(), sse_heartbeat_interval=0.5)
    for name, workflow in make_workflows().items():
        server.add_workflow(name, workflow)
    return server


@pytest.fixture
async def server_url(workflow_server: WorkflowServer) -> AsyncIterator[str]:
    """The test ``WorkflowServer``, served over real HTTP."""
    async with serving(workflow_server.app) as url:
        yield url


@pytest.fixture
async def http(server_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A raw HTTP client on the test server."""
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:
        yield client


@pytest.fixture
async def stored_rows(
    workflow_server: WorkflowServer, database_url: str | None
) -> AsyncIterator[CountRows]:
    """Counts the rows the test server's store holds, read directly (not through the API)."""
    async with row_counter(workflow_server.store, database_url) as count:
        yield count
