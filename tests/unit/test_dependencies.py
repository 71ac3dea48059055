"""``dependencies``: host endpoints get the app's run service and store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from llama_workflows_asgi import MemoryWorkflowStore, workflow_router
from llama_workflows_asgi.dependencies import (
    WorkflowServiceDep,
    WorkflowStoreDep,
    get_workflow_service,
)
from llama_workflows_asgi.router import WorkflowRouter
from llama_workflows_asgi.service import WorkflowService
from tests.support.workflows import GreetWorkflow


def host_app(router: WorkflowRouter) -> FastAPI:
    app = FastAPI()
    app.include_router(router, prefix="/wf")

    @app.post("/greet/{name}")
    async def greet(name: str, service: WorkflowServiceDep) -> dict[str, str]:
        start = service.registry.get("greet").workflow.start_event_class(name=name)
        done = await service.run("greet", start)
        return {"handler_id": done.handler_id, "status": done.status}

    @app.get("/store")
    async def store(store: WorkflowStoreDep) -> dict[str, str]:
        return {"store": type(store).__name__, "id": str(id(store))}

    return app


@pytest.fixture
def router() -> WorkflowRouter:
    return workflow_router(MemoryWorkflowStore(), workflows={"greet": GreetWorkflow()})


@pytest.fixture
async def http(router: WorkflowRouter) -> AsyncIterator[httpx.AsyncClient]:
    app = host_app(router)
    transport = httpx.ASGITransport(app=app)
    async with (
        router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://host") as client,
    ):
        yield client


async def test_a_host_endpoint_runs_a_workflow_through_the_service(
    http: httpx.AsyncClient, router: WorkflowRouter
) -> None:
    response = await http.post("/greet/Ada")
    assert response.status_code == 200
    handler_id = response.json()["handler_id"]
    assert response.json()["status"] == "completed"
    assert (await router.service.get(handler_id)).workflow_name == "greet"
    # The host's run is one of the router's handlers.
    assert (await http.get(f"/wf/handlers/{handler_id}")).status_code == 200


async def test_the_store_is_the_routers(http: httpx.AsyncClient, router: WorkflowRouter) -> None:
    body = (await http.get("/store")).json()
    assert body == {"store": "MemoryWorkflowStore", "id": str(id(router.store))}


async def test_without_the_lifespan_it_is_a_503(router: WorkflowRouter) -> None:
    transport = httpx.ASGITransport(app=host_app(router))
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as http:
        response = await http.get("/store")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "include the workflow router" in response.json()["detail"]


async def test_tests_override_it() -> None:
    stand_in = WorkflowService(MemoryWorkflowStore())
    app = host_app(workflow_router())
    app.dependency_overrides[get_workflow_service] = lambda: stand_in
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as http:
        body = (await http.get("/store")).json()
    assert body["id"] == str(id(stand_in.store))
