"""A host application that serves durable workflows beside its own endpoints.

What it shows:

* the workflow API included under ``/workflows-api`` with the host's own
  authentication (an ``X-API-Key`` header mapped to a user id) on every route;
* per-user handlers: ``principal=current_user`` makes each handler belong to the
  user who started it, and users only ever see their own;
* a host endpoint starting and reading runs through ``WorkflowServiceDep``;
* the workflow router's lifespan (open the store, resume interrupted runs)
  merged with the host's own;
* an open ``GET /health`` for probes (``router.health_router()``), while the
  workflow routes need a key.

Run it from the repository root::

    uvicorn examples.host_app.app:app

then, for instance::

    curl -X POST localhost:8000/greetings -H 'X-API-Key: alice-key' \\
         -H 'content-type: application/json' -d '{"name": "Ada"}'
    curl localhost:8000/workflows-api/handlers -H 'X-API-Key: alice-key'

Handlers live in ``DATABASE_URL`` (default: the SQLite file ``host_app.db``;
``postgresql+asyncpg://...`` works too, after ``alembic upgrade head``). API keys
come from ``API_KEYS`` (``key:user,key:user``), by default ``alice-key`` and
``bob-key``: demo values, replace them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from workflows import Context, Workflow, step
from workflows.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
)

from llama_workflows_asgi import (
    AbstractWorkflowStore,
    HandlerNotFoundError,
    SqlAlchemyWorkflowStore,
    WorkflowServiceDep,
    workflow_router,
)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///host_app.db"
DEMO_API_KEYS = {"alice-key": "alice", "bob-key": "bob"}
WORKFLOWS_PREFIX = "/workflows-api"

# -- workflows ---------------------------------------------------------------------------


class ProgressEvent(Event):
    """Written to the run's event stream while a greeting is prepared."""

    message: str


class GreetingWorkflow(Workflow):
    """StartEvent(name) -> two progress events -> StopEvent(result={"greeting": ...})."""

    @step
    async def greet(self, ctx: Context, ev: StartEvent) -> StopEvent:
        name = ev.get("name", "World")
        ctx.write_event_to_stream(ProgressEvent(message=f"looking up {name}"))
        ctx.write_event_to_stream(ProgressEvent(message="writing the greeting"))
        return StopEvent(result={"greeting": f"Hello, {name}!"})


class ApprovalWorkflow(Workflow):
    """Asks a human to approve ``item`` and finishes with the decision.

    The question is an ``InputRequiredEvent`` on the stream; the answer is a
    ``HumanResponseEvent`` with ``response`` "yes" or anything else.
    """

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        item = ev.get("item", "the request")
        await ctx.store.set("item", item)
        return InputRequiredEvent(prefix=f"Approve {item}?")

    @step
    async def decide(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        item = await ctx.store.get("item")
        return StopEvent(result={"item": item, "approved": ev.get("response") == "yes"})


class ReportWorkflow(Workflow):
    """A long job: sleeps ``seconds`` (default 5), then reports."""

    @step
    async def build(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(float(ev.get("seconds", 5)))
        return StopEvent(result="report ready")


def build_workflows() -> dict[str, Workflow]:
    """Fresh workflow instances, by the names the API serves them under."""
    return {
        "greet": GreetingWorkflow(),
        "approval": ApprovalWorkflow(timeout=None),
        "report": ReportWorkflow(timeout=None),
    }


# -- authentication ----------------------------------------------------------------------

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your API key")


async def current_user(
    request: Request, api_key: Annotated[str | None, Security(api_key_header)]
) -> str:
    """The id of the user the ``X-API-Key`` header belongs to; 401 without a valid key."""
    users: Mapping[str, str] = request.app.state.api_keys
    user = users.get(api_key or "")
    if user is None:
        raise HTTPException(
            401, "Missing or unknown API key", headers={"WWW-Authenticate": "APIKey"}
        )
    return user


CurrentUser = Annotated[str, Depends(current_user)]


def api_keys_from_env() -> dict[str, str]:
    """``API_KEYS=key:user,key:user`` from the environment, or the demo keys."""
    raw = os.environ.get("API_KEYS")
    if not raw:
        return dict(DEMO_API_KEYS)
    pairs = (item.split(":", 1) for item in raw.split(",") if item.strip())
    return {key.strip(): user.strip() for key, user in pairs}


# -- host endpoints ----------------------------------------------------------------------


class GreetingRequest(BaseModel):
    name: str


class GreetingStatus(BaseModel):
    handler_id: str
    status: str
    greeting: str | None = None


def add_host_routes(app: FastAPI) -> None:
    """The host's own endpoints, using the run service as a dependency."""

    @app.post("/greetings", response_model=GreetingStatus, tags=["greetings"])
    async def start_greeting(
        request: GreetingRequest, user: CurrentUser, service: WorkflowServiceDep
    ) -> GreetingStatus:
        """Start a greeting run for the caller; poll it at ``GET /greetings/{id}``."""
        handler = await service.start_run("greet", StartEvent(name=request.name), principal=user)
        return GreetingStatus(handler_id=handler.handler_id, status=handler.status)

    @app.get("/greetings/{handler_id}", response_model=GreetingStatus, tags=["greetings"])
    async def get_greeting(
        handler_id: str, user: CurrentUser, service: WorkflowServiceDep
    ) -> GreetingStatus:
        """The caller's greeting run and, once completed, its greeting."""
        try:
            handler = await service.get(handler_id, principal=user)
        except HandlerNotFoundError as exc:
            # The service's errors reach host code as exceptions: map them here.
            raise HTTPException(404, str(exc)) from exc
        greeting = None
        if handler.result is not None:
            greeting = handler.result.result["greeting"]
        return GreetingStatus(handler_id=handler_id, status=handler.status, greeting=greeting)

    @app.get("/status", tags=["host"])
    async def status(service: WorkflowServiceDep) -> dict[str, Any]:
        """When the host started, and which workflows it serves (no key needed)."""
        return {
            "started_at": app.state.started_at.isoformat(),
            "workflows": service.registry.names,
        }


# -- the application -----------------------------------------------------------------------


@asynccontextmanager
async def host_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The host's own startup and shutdown work; the workflow router's runs inside it."""
    app.state.started_at = datetime.now(timezone.utc)
    app.state.stopped_at = None
    yield
    app.state.stopped_at = datetime.now(timezone.utc)


def create_app(
    database_url: str | None = None,
    *,
    store: AbstractWorkflowStore | None = None,
    api_keys: Mapping[str, str] | None = None,
    prefix: str = WORKFLOWS_PREFIX,
) -> FastAPI:
    """Build the host app.

    Args:
        database_url: Where handlers live (``DATABASE_URL``, else ``host_app.db``).
        store: A ready store to use instead of ``database_url`` (tests pass one).
        api_keys: API key -> user id (``API_KEYS``, else the demo keys).
        prefix: Where the workflow API is mounted.
    """
    app = FastAPI(title="Host app with workflows", lifespan=host_lifespan)
    app.state.api_keys = dict(api_keys if api_keys is not None else api_keys_from_env())
    url = database_url or os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    router = workflow_router(
        store or SqlAlchemyWorkflowStore(url),
        workflows=build_workflows(),
        principal=current_user,
    )
    # include_router merges the router's lifespan into host_lifespan.
    app.include_router(
        router, prefix=prefix, tags=["workflows"], dependencies=[Depends(current_user)]
    )
    # The same health route without the key, for a load balancer's probe: GET /health.
    app.include_router(router.health_router(), tags=["host"])
    add_host_routes(app)
    return app


app = create_app()
