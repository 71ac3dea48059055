"""A host app for the dashboard tests: the workflow router under a prefix, behind auth.

A request is let in with the ``dash_login`` cookie or an ``Authorization: Bearer``
header carrying ``TOKEN``; anything else gets 401, the dashboard page included.
Run with ``python -m uvicorn --factory tests.dashboard.host_app:create_app``;
``WF_DATABASE_URL`` names the SQLite store.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any

from fastapi import Cookie, Depends, FastAPI, Header, HTTPException, Request
from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi import SqlAlchemyWorkflowStore, workflow_router
from tests.support.workflows import FailWorkflow, GreetWorkflow, HitlWorkflow, ProgressEvent

PREFIX = "/ops/workflows"
TOKEN = "dashboard-test-token"
COOKIE = "dash_login"


async def require_login(
    dash_login: Annotated[str | None, Cookie()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """The host's own auth: a login cookie or a bearer token."""
    if dash_login == TOKEN or authorization == f"Bearer {TOKEN}":
        return
    raise HTTPException(401, "Not authenticated")


class TicketStart(StartEvent):
    """What a support ticket run starts from."""

    title: str
    priority: int = 2
    urgent: bool = False


class Escalated(Event):
    """An urgent ticket, for the on-call queue."""

    title: str


class Queued(Event):
    """A ticket for the normal queue."""

    title: str
    priority: int


class TicketWorkflow(Workflow):
    """Triages a ticket into one of two queues, streaming progress on the way."""

    @step
    async def triage(self, ctx: Context, ev: TicketStart) -> Escalated | Queued:
        for i in range(2):
            ctx.write_event_to_stream(ProgressEvent(msg=f"checked {i}", i=i))
        if ev.urgent:
            return Escalated(title=ev.title)
        return Queued(title=ev.title, priority=ev.priority)

    @step
    async def page_on_call(self, ev: Escalated) -> StopEvent:
        return StopEvent(result={"title": ev.title, "queue": "p1"})

    @step
    async def enqueue(self, ev: Queued) -> StopEvent:
        return StopEvent(result={"title": ev.title, "queue": f"normal-{ev.priority}"})


FAILED_ONCE: set[str] = set()
"""Tickets whose first attempt already failed (a process-wide memory)."""


class Checked(Event):
    """A ticket that passed its first check."""

    ticket: str


class FlakyWorkflow(Workflow):
    """Fails at its second step on the first attempt for a ticket, then succeeds."""

    @step
    async def check(self, ev: StartEvent) -> Checked:
        return Checked(ticket=str(ev.get("ticket", "t")))

    @step
    async def file(self, ev: Checked) -> StopEvent:
        if ev.ticket not in FAILED_ONCE:
            FAILED_ONCE.add(ev.ticket)
            raise RuntimeError("the ticket system is down")
        return StopEvent(result=f"filed {ev.ticket}")


class PausedWorkflow(Workflow):
    """Waits (``seconds``, default 60) until cancelled: a run that stays running."""

    @step
    async def wait(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(float(ev.get("seconds", 60)))
        return StopEvent(result="woke up")


STREAM_REQUESTS: list[dict[str, str | None]] = []
"""Every event-stream request the host received: its query and ``Last-Event-ID``."""


def create_app() -> FastAPI:
    """The host app, with the dashboard on."""
    store = SqlAlchemyWorkflowStore(os.environ["WF_DATABASE_URL"])
    router = workflow_router(
        store,
        workflows={
            "greet": GreetWorkflow(),
            "ticket": TicketWorkflow(),
            "hitl": HitlWorkflow(timeout=None),
            "fail": FailWorkflow(),
            "paused": PausedWorkflow(timeout=None),
            "flaky": FlakyWorkflow(),
        },
        dashboard=True,
    )
    app = FastAPI(title="Dashboard host")
    app.include_router(router, prefix=PREFIX, dependencies=[Depends(require_login)])

    @app.middleware("http")
    async def record_streams(request: Request, call_next: Any) -> Any:
        # Lets the tests see what a browser sent when it reconnected to a stream.
        if request.url.path.startswith(f"{PREFIX}/events/") and request.method == "GET":
            entry = {
                "path": request.url.path,
                "last_event_id": request.headers.get("last-event-id"),
            }
            STREAM_REQUESTS.append(entry)
        return await call_next(request)

    @app.get("/test/stream-requests", dependencies=[Depends(require_login)])
    async def stream_requests() -> list[dict[str, str | None]]:
        return STREAM_REQUESTS

    return app
