"""``workflow_router``: the workflow HTTP API as an ``APIRouter`` a host app includes.

The routes themselves live by resource in ``api``; this module builds the
router, binds it to its service and runs the service in the router's lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter
from workflows import Workflow
from workflows.events import Event

from . import api
from ._heap import freeze_startup_heap
from ._http import WorkflowRoute, error_response
from ._signals import chained_stop_signals
from .api import health
from .api.deps import DEFAULT_MAX_BODY_SIZE, DEFAULT_SSE_HEARTBEAT, EdgeLimits, RouterBinding
from .api.wire import handler_json
from .dashboard import add_dashboard_routes
from .service import AbstractWorkflowStore, ServiceConfig, WorkflowService


class WorkflowRouter(APIRouter):
    """An ``APIRouter`` serving workflows, with the run service behind it.

    Include it with ``app.include_router(router, prefix=..., dependencies=[...])``;
    its lifespan (open the store, resume interrupted runs, stop gracefully on
    SIGINT or SIGTERM, release runs on shutdown) is merged into the host's. A
    host that mounts instead of including enters ``router.lifespan_context(app)``
    in its own lifespan.
    """

    def __init__(
        self,
        service: WorkflowService,
        binding: RouterBinding | None = None,
        *,
        freeze_heap: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(route_class=WorkflowRoute, lifespan=self._lifespan, **kwargs)
        self.service = service
        self.binding = binding or RouterBinding(service, EdgeLimits(service.config.max_json_depth))
        """The dependencies that hand this router's service to its routes."""
        self.freeze_heap = freeze_heap
        """Freeze the process's heap once started (see ``workflow_router``)."""

    @property
    def store(self) -> AbstractWorkflowStore:
        """The store the service writes to."""
        return self.service.store

    def add_workflow(
        self,
        name: str,
        workflow: Workflow,
        additional_events: Iterable[type[Event]] | None = None,
        *,
        version: str | None = None,
    ) -> None:
        """Serve ``workflow`` under ``/workflows/{name}``.

        ``additional_events`` declares events a step waits for with
        ``ctx.wait_for_event`` without naming them in its signature, so callers
        may send them. ``version`` is what its runs record (default: a
        fingerprint of its steps and event types); this process resumes only
        runs of the versions it serves (see docs/operations.md, rolling deploys).
        """
        self.service.add_workflow(name, workflow, additional_events or (), version=version)

    def health_router(self, path: str = "/health") -> APIRouter:
        """A router holding only the health route, for probes that carry no credentials.

        Include it without the dependencies the workflow routes get::

            app.include_router(workflows, prefix="/wf", dependencies=[Depends(auth)])
            app.include_router(workflows.health_router())  # GET /health, open

        It reports on this router's service and needs no lifespan of its own;
        when unhealthy, its ``detail`` names the problem without the underlying
        error's text (the routes behind your auth give that).
        """
        router = APIRouter(route_class=WorkflowRoute)
        health.register(router, self.binding, path, public=True)
        return router

    @asynccontextmanager
    async def _lifespan(self, app: Any) -> AsyncIterator[None]:
        state = getattr(app, "state", None)
        if state is not None:
            state.workflow_service = self.service
        service = self.service
        async with service.running_context():
            # Before the first ownership round: the runs it adopts (and every
            # later one) stay collectable.
            if self.freeze_heap:
                freeze_startup_heap()
            # SIGINT/SIGTERM begin the graceful stop before the server waits
            # for open streams to close (see ``_signals``).
            with chained_stop_signals(service.begin_stop, lambda: service.drained):
                yield


def workflow_router(
    store: AbstractWorkflowStore | None = None,
    *,
    workflows: Mapping[str, Workflow] | None = None,
    principal: Callable[..., Any] | None = None,
    config: ServiceConfig | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    sse_heartbeat_interval: float | None = DEFAULT_SSE_HEARTBEAT,
    dashboard: bool = False,
    freeze_heap: bool = False,
    **router_kwargs: Any,
) -> WorkflowRouter:
    """Build the workflow API router.

    Args:
        store: Where handler state lives (an in-memory store if omitted).
        workflows: Workflows to serve, by name; more can be added with
            ``router.add_workflow``.
        principal: A FastAPI dependency returning the caller's identity (a
            string). When given, each handler records who started it and every
            handler route only sees the caller's own handlers.
        config: Service tunables (leases, idle release, checkpoints, paging).
        max_body_size: Largest accepted request body in bytes (larger: 413).
        sse_heartbeat_interval: Seconds of silence before an SSE stream sends a
            ``: heartbeat`` comment (``None`` disables heartbeats).
        dashboard: Also serve the runs dashboard page at ``/ui``.
        freeze_heap: Once the lifespan has started the service (store open,
            background rounds started; interrupted runs are adopted just after,
            so they are not frozen), collect and then ``gc.freeze()`` every
            object alive, the first time in the process: the garbage
            collector's full collections stop walking the startup heap
            (modules, classes, caches; see ``docs/benchmarks.md``, eighth
            round). Process-wide: a cycle among those objects that becomes
            garbage later is never collected, nor what it references. Off
            here, since the process is the host's; ``WorkflowServer`` turns it
            on when this package serves it.
        router_kwargs: Passed to ``APIRouter`` (``prefix``, ``tags``, ``dependencies``...).
    """
    service = WorkflowService(store, config=config, scoped=principal is not None)
    limits = EdgeLimits(service.config.max_json_depth, max_body_size, sse_heartbeat_interval)
    binding = RouterBinding(service, limits, principal)
    router = WorkflowRouter(service, binding, freeze_heap=freeze_heap, **router_kwargs)
    for name, workflow in (workflows or {}).items():
        router.add_workflow(name, workflow)
    api.add_api_routes(router, binding)
    if dashboard:
        add_dashboard_routes(router)
    return router


__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "WorkflowRouter",
    "error_response",
    "handler_json",
    "workflow_router",
]
