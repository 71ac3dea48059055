"""``api.add_api_routes``: every workflow route, bound to one service, on any router."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, FastAPI

from llama_workflows_asgi._http import WorkflowRoute
from llama_workflows_asgi.api import add_api_routes
from llama_workflows_asgi.api.deps import EdgeLimits, RouterBinding
from llama_workflows_asgi.service import WorkflowService
from tests.support.routes import anonymous
from tests.support.workflows import GreetWorkflow

ROUTES = {
    "/health": ["get"],
    "/workflows": ["get"],
    "/workflows/{name}/schema": ["get"],
    "/workflows/{name}/events": ["get"],
    "/workflows/{name}/representation": ["get"],
    "/workflows/{name}/run-nowait": ["post"],
    "/workflows/{name}/run": ["post"],
    "/handlers": ["get"],
    "/handlers/{handler_id}": ["get"],
    "/results/{handler_id}": ["get"],
    "/handlers/{handler_id}/cancel": ["post"],
    "/handlers/{handler_id}/retry": ["post"],
    "/events/{handler_id}": ["get", "post"],
}


def test_adds_the_thirteen_routes_of_the_protocol_and_retry() -> None:
    service = WorkflowService()
    router = APIRouter(route_class=WorkflowRoute)
    add_api_routes(router, RouterBinding(service, EdgeLimits(64), anonymous))
    app = FastAPI()
    app.include_router(router, prefix="/wf")
    paths = app.openapi()["paths"]
    expected = {"/wf" + path: methods for path, methods in ROUTES.items()}
    assert {path: sorted(methods) for path, methods in paths.items()} == expected


async def test_the_routes_reach_the_bound_service() -> None:
    service = WorkflowService()
    service.add_workflow("greet", GreetWorkflow())
    router = APIRouter(route_class=WorkflowRoute)
    add_api_routes(router, RouterBinding(service, EdgeLimits(64), anonymous))
    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with (
        service.running_context(),
        httpx.AsyncClient(transport=transport, base_url="http://api") as http,
    ):
        assert (await http.get("/workflows")).json() == {"workflows": ["greet"]}
        done = await http.post("/workflows/greet/run", json={})
        assert done.json()["status"] == "completed"
        handler_id = done.json()["handler_id"]
        assert (await service.get(handler_id)).status == "completed"
        assert (await http.get("/health")).json() == {"status": "healthy"}


def test_the_routes_starting_runs_are_tried_first() -> None:
    router = APIRouter(route_class=WorkflowRoute)
    add_api_routes(router, RouterBinding(WorkflowService(), EdgeLimits(64)))
    paths = [getattr(route, "path", None) for route in router.routes]
    assert paths[:2] == ["/workflows/{name}/run-nowait", "/workflows/{name}/run"]
    assert paths[-1] == "/health"
