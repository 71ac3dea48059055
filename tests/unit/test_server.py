"""``WorkflowServer``: one workflow router in a FastAPI app, served with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from llama_workflows_asgi import MemoryWorkflowStore, WorkflowServer
from tests.support.processes import free_port
from tests.support.workflows import DecisionEvent, WaiterWorkflow, make_workflows


def client(server: WorkflowServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app), base_url="http://s")


def test_holds_one_router_its_service_and_store() -> None:
    store = MemoryWorkflowStore()
    server = WorkflowServer(store, title="Orders", max_body_size=128)
    assert server.store is store
    assert server.router.store is store
    assert server.service is server.router.service
    assert server.app.title == "Orders"
    assert server.app.openapi()["info"]["title"] == "Orders"


async def test_serves_the_dashboard_unless_told_not_to() -> None:
    async with client(WorkflowServer()) as http:
        assert (await http.get("/ui")).status_code == 200
    async with client(WorkflowServer(dashboard=False)) as http:
        assert (await http.get("/ui")).status_code == 404


async def test_adds_no_cors_headers_of_its_own() -> None:
    origin = {"Origin": "https://elsewhere.example"}
    async with client(WorkflowServer()) as http:
        assert (
            "access-control-allow-origin"
            not in (await http.get("/workflows", headers=origin)).headers
        )
    cors = [Middleware(CORSMiddleware, allow_origins=["https://elsewhere.example"])]
    async with client(WorkflowServer(middleware=cors)) as http:
        answer = await http.get("/workflows", headers=origin)
        assert answer.headers["access-control-allow-origin"] == "https://elsewhere.example"


def test_add_workflow_passes_additional_events_and_version() -> None:
    server = WorkflowServer()
    server.add_workflow("waiter", WaiterWorkflow(timeout=None), [DecisionEvent], version="v7")
    entry = server.service.registry.get("waiter")
    assert DecisionEvent in entry.declared_events
    assert entry.version == "v7"


# -- the reference's WorkflowServer API ----------------------------------------------------------


async def test_get_workflows_and_serve_with_a_uvicorn_config() -> None:
    server = WorkflowServer(freeze_heap=False)  # this test process stays unfrozen (test_heap)
    workflows = make_workflows()
    server.add_workflow("greet", workflows["greet"])
    server.add_workflow("custom", workflows["custom"])
    assert server.get_workflows() == {"greet": workflows["greet"], "custom": workflows["custom"]}

    port = free_port()
    config = {"root_path": "/behind-proxy", "log_level": "warning"}
    serving_task = asyncio.create_task(server.serve("127.0.0.1", port, config))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 20
            while True:
                assert not serving_task.done(), serving_task
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not start"
                await asyncio.sleep(0.05)
            document = (await http.get("/openapi.json")).json()
            assert document["servers"] == [{"url": "/behind-proxy"}]  # root_path reached uvicorn
    finally:
        serving_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving_task
