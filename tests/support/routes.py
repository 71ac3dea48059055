"""One route module's routes, alone in an app, over a real service and store.

The route twins (``tests/api/test_<module>.py``) register only their module's
routes on a bare router, so what they see is that module's work: no other
route, no ``workflow_router`` factory. Requests go through httpx's in-process
transport, which buffers whole bodies: streams read this way must end.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from fastapi import APIRouter, FastAPI, Header
from workflows import Workflow
from workflows.events import Event

from llama_workflows_asgi import MemoryWorkflowStore
from llama_workflows_asgi._http import WorkflowRoute
from llama_workflows_asgi.api.deps import EdgeLimits, RouterBinding
from llama_workflows_asgi.service import AbstractWorkflowStore, ServiceConfig, WorkflowService
from llama_workflows_asgi.store import SqlAlchemyWorkflowStore
from tests.support.workflows import CustomWorkflow, FailWorkflow, GreetWorkflow, SlowWorkflow


class RouteModule(Protocol):
    """A module of ``api`` that adds its routes to a router."""

    def register(self, router: APIRouter, binding: RouterBinding) -> None: ...


@dataclass
class Edge:
    """A client on the routes, and the service behind them."""

    http: httpx.AsyncClient
    service: WorkflowService
    app: FastAPI


async def anonymous() -> None:
    return None


async def header_user(x_user: str = Header("ada")) -> str:
    """The principal named by the ``X-User`` header (``ada`` when there is none)."""
    return x_user


def run_workflows() -> dict[str, Workflow]:
    """Fresh instances of the workflows the run and handler route twins serve."""
    return {
        "greet": GreetWorkflow(),
        "custom": CustomWorkflow(),
        "fail": FailWorkflow(),
        "slow": SlowWorkflow(timeout=None),
    }


_TEMPLATE: list[Path] = []
"""A migrated, empty database file, made once per process and copied for each test."""


async def sqlite_store(directory: Path) -> SqlAlchemyWorkflowStore:
    """A store on a fresh SQLite file in ``directory``, already at the head revision."""
    if not _TEMPLATE:
        folder = tempfile.mkdtemp(prefix="edge-")
        atexit.register(shutil.rmtree, folder, True)
        template = Path(folder) / "template.db"
        store = SqlAlchemyWorkflowStore(_url(template), migrate=True)
        await store.start()
        await store.close()
        _TEMPLATE.append(template)
    shutil.copyfile(_TEMPLATE[0], directory / "edge.db")
    return SqlAlchemyWorkflowStore(_url(directory / "edge.db"), migrate=True)


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@asynccontextmanager
async def routes_of(
    *modules: RouteModule,
    workflows: Mapping[str, Workflow | tuple[Workflow, list[type[Event]]]] | None = None,
    store: AbstractWorkflowStore | None = None,
    principal: Callable[..., Any] | None = None,
    limits: EdgeLimits | None = None,
    config: ServiceConfig | None = None,
) -> AsyncIterator[Edge]:
    """An app serving only ``modules``' routes, its service running on ``store``."""
    service = WorkflowService(
        store or MemoryWorkflowStore(), config=config, scoped=principal is not None
    )
    for name, served in (workflows or {}).items():
        workflow, extra = served if isinstance(served, tuple) else (served, [])
        service.add_workflow(name, workflow, extra)
    binding = RouterBinding(
        service, limits or EdgeLimits(service.config.max_json_depth), principal or anonymous
    )
    router = APIRouter(route_class=WorkflowRoute)
    for module in modules:
        module.register(router, binding)
    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with (
        service.running_context(),
        httpx.AsyncClient(transport=transport, base_url="http://edge", timeout=30) as http,
    ):
        yield Edge(http, service, app)
