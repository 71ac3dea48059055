"""``router``: the workflow router factory, its binding and its lifespan."""

from __future__ import annotations

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException

from llama_workflows_asgi import MemoryWorkflowStore, ServiceConfig, router
from llama_workflows_asgi.router import WorkflowRouter, workflow_router
from tests.support.workflows import DecisionEvent, GreetWorkflow, WaiterWorkflow


async def user(x_user: str = Header()) -> str:
    return x_user


async def key(x_key: str | None = Header(None)) -> None:
    if x_key != "secret":
        raise HTTPException(401, "no key")


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r")


def test_the_factory_binds_its_options() -> None:
    built = workflow_router(
        workflows={"greet": GreetWorkflow()},
        principal=user,
        config=ServiceConfig(max_page_size=5, max_json_depth=20),
        max_body_size=100,
        sse_heartbeat_interval=None,
        prefix="/wf",
        tags=["workflows"],
    )
    assert isinstance(built, WorkflowRouter)
    assert isinstance(built.store, MemoryWorkflowStore)  # none given: in memory
    assert built.service.registry.names == ["greet"]
    assert built.service.scoped
    assert built.binding.service is built.service
    limits = built.binding.limits
    assert (limits.max_json_depth, limits.max_body_size, limits.heartbeat_interval) == (
        20,
        100,
        None,
    )
    app = FastAPI()
    app.include_router(built)
    operation = app.openapi()["paths"]["/wf/workflows"]["get"]
    assert operation["tags"] == ["workflows"]


def test_unscoped_by_default_and_add_workflow_registers() -> None:
    built = workflow_router()
    assert not built.service.scoped
    built.add_workflow("waiter", WaiterWorkflow(timeout=None), [DecisionEvent], version="v2")
    entry = built.service.registry.get("waiter")
    assert (entry.version, DecisionEvent in entry.declared_events) == ("v2", True)


async def test_the_lifespan_runs_the_service_and_names_it_in_the_app_state() -> None:
    built = workflow_router(workflows={"greet": GreetWorkflow()})
    app = FastAPI()
    app.include_router(built)
    assert not built.service.running
    # Merged into the host's lifespan by include_router.
    async with app.router.lifespan_context(app):
        assert built.service.running
        assert app.state.workflow_service is built.service
    assert not built.service.running


async def test_errors_answer_with_a_detail_and_the_hosts_dependencies_apply() -> None:
    built = workflow_router(workflows={"greet": GreetWorkflow()})
    app = FastAPI()
    app.include_router(built, dependencies=[Depends(key)])
    async with built.lifespan_context(app), client(app) as http:
        refused = await http.get("/workflows")
        assert (refused.status_code, refused.json()) == (401, {"detail": "no key"})
        missing = await http.get("/handlers/nope", headers={"x-key": "secret"})
        assert (missing.status_code, missing.json()) == (
            404,
            {"detail": "Handler 'nope' not found"},
        )


async def test_the_health_router_holds_only_health_outside_the_hosts_auth() -> None:
    built = workflow_router()
    app = FastAPI()
    app.include_router(built, prefix="/wf", dependencies=[Depends(key)])
    app.include_router(built.health_router("/probe"))
    probe_only = FastAPI()
    probe_only.include_router(built.health_router())
    assert list(probe_only.openapi()["paths"]) == ["/health"]
    async with built.lifespan_context(app), client(app) as http:
        assert (await http.get("/probe")).json() == {"status": "healthy"}
        assert (await http.get("/wf/health")).status_code == 401


def test_exports() -> None:
    assert set(router.__all__) == {
        "DEFAULT_MAX_BODY_SIZE",
        "WorkflowRouter",
        "error_response",
        "handler_json",
        "workflow_router",
    }
    assert router.DEFAULT_MAX_BODY_SIZE == 1024 * 1024
