"""Fixtures for the HTTP API suites."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from llama_workflows_asgi import WorkflowServer
from tests.support.servers import serving
from tests.support.stores import StoreFactory
from tests.support.workflows import make_workflows



@pytest.fixture
async def server_url(make_store: StoreFactory) -> AsyncIterator[str]:
    """A ``WorkflowServer`` with the test workflows, served over real HTTP."""
    server = WorkflowServer(make_store(), sse_heartbeat_interval=0.5)
    for name, workflow in make_workflows().items():
        server.add_workflow(name, workflow)
    async with serving(server.app) as url:
        yield url


@pytest.fixture
async def http(server_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A raw HTTP client on the test server."""
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:
        yield client
