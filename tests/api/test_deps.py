"""``api.deps``: each router's routes reach that router's service, principal and limits."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Depends, FastAPI, Header
from fastapi.routing import APIRoute

from llama_workflows_asgi import (
    HandlerQuery,
    MemoryWorkflowStore,
    PersistentHandler,
    ServiceConfig,
    workflow_router,
)
from tests.support.servers import serving
from tests.support.workflows import GreetWorkflow


async def user(x_user: str = Header()) -> str:
    return x_user


async def rows(store: MemoryWorkflowStore, *handler_ids: str) -> list[PersistentHandler]:
    return await store.query(HandlerQuery(handler_id_in=list(handler_ids) or None))


async def test_two_routers_in_one_app_each_serve_their_own_service() -> None:
    open_store, scoped_store = MemoryWorkflowStore(), MemoryWorkflowStore()
    app = FastAPI()
    open_router = workflow_router(open_store, workflows={"greet": GreetWorkflow()})
    scoped = workflow_router(
        scoped_store,
        workflows={"hello": GreetWorkflow()},
        principal=user,
        config=ServiceConfig(max_page_size=2),
        max_body_size=64,
    )
    app.include_router(open_router, prefix="/open")
    app.include_router(scoped, prefix="/scoped")
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/open/workflows")).json() == {"workflows": ["greet"]}
        ada = {"x-user": "ada"}
        assert (await http.get("/scoped/workflows")).json() == {"workflows": ["hello"]}
        started = await http.post("/scoped/workflows/hello/run", json={}, headers=ada)
        assert started.status_code == 200
        assert started.json()["workflow_name"] == "hello"
        handler_id = started.json()["handler_id"]
        assert [row.principal for row in await rows(scoped_store, handler_id)] == ["ada"]
        assert await rows(open_store, handler_id) == []

        # The scoped router's limits, not the open one's.
        big = {"start_event": {"name": "x" * 100}}
        assert (
            await http.post("/scoped/workflows/hello/run", json=big, headers=ada)
        ).status_code == 413
        assert (await http.post("/open/workflows/greet/run", json=big)).status_code == 200
        too_many = await http.get("/scoped/handlers", params={"limit": "3"}, headers=ada)
        assert too_many.status_code == 400
        assert "limit" in too_many.json()["detail"]
        assert (await http.get("/open/handlers", params={"limit": "3"})).status_code == 200
        # Scoped: another caller sees nothing of ada's.
        other = await http.get("/scoped/handlers", headers={"x-user": "bob"})
        assert other.json() == {"handlers": [], "next_cursor": None}


async def test_a_failed_principal_is_a_400_and_starts_nothing() -> None:
    store = MemoryWorkflowStore()
    app = FastAPI()
    app.include_router(workflow_router(store, workflows={"greet": GreetWorkflow()}, principal=user))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        refused = await http.post("/workflows/greet/run-nowait", json={})
        assert refused.status_code == 400
        assert refused.json() == {"detail": "Invalid request: x-user: Field required"}
        listing = await http.get("/handlers", params={"limit": "0"})
        assert listing.status_code == 400
        assert "x-user" in listing.json()["detail"]
        assert "limit" in listing.json()["detail"]
        # Health asks for no principal.
        assert (await http.get("/health")).json() == {"status": "healthy"}
    assert await rows(store) == []


def solved(router: APIRouter) -> dict[str, list[object]]:
    """The dependencies each route of ``router`` solves before calling its endpoint."""
    return {
        f"{sorted(route.methods)[0]} {route.path}": [d.call for d in route.dependant.dependencies]
        for route in router.routes
        if isinstance(route, APIRoute)
    }


def test_each_route_solves_the_principal_alone_and_nothing_without_one() -> None:
    unscoped = solved(workflow_router(workflows={"greet": GreetWorkflow()}))
    assert len(unscoped) == 14
    assert all(calls == [] for calls in unscoped.values())
    scoped = solved(workflow_router(workflows={"greet": GreetWorkflow()}, principal=user))
    open_routes = {path for path, calls in scoped.items() if calls == []}
    assert open_routes == {
        "GET /health",
        "GET /workflows",
        "GET /workflows/{name}/schema",
        "GET /workflows/{name}/events",
        "GET /workflows/{name}/representation",
    }
    assert all(calls == [user] for path, calls in scoped.items() if path not in open_routes)


async def test_a_principal_the_host_also_requires_runs_once_per_request() -> None:
    seen: list[str] = []

    async def counted_user(x_user: str = Header()) -> str:
        seen.append(x_user)
        return x_user

    store = MemoryWorkflowStore()
    app = FastAPI()
    router = workflow_router(store, workflows={"greet": GreetWorkflow()}, principal=counted_user)
    app.include_router(router, dependencies=[Depends(counted_user)])
    transport = httpx.ASGITransport(app=app)
    async with (
        router.service.running_context(),
        httpx.AsyncClient(transport=transport, base_url="http://edge") as http,
    ):
        done = await http.post("/workflows/greet/run", json={}, headers={"x-user": "ada"})
        assert done.status_code == 200
        assert (await rows(store, done.json()["handler_id"]))[0].principal == "ada"
    assert seen == ["ada"]
