"""``WorkflowServer``: a standalone app serving workflows, as in the seed document."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.middleware import Middleware
from workflows import Workflow
from workflows.events import Event

from ._signals import absorbed_stop_signals
from .router import WorkflowRouter, workflow_router
from .service.service import WorkflowService
from .store.base import AbstractWorkflowStore


class WorkflowServer:
    """A FastAPI app holding one workflow router, served with uvicorn.

    ::

        server = WorkflowServer(workflow_store=SqliteWorkflowStore(db_path="handlers.db"))
        server.add_workflow("greet", GreetingWorkflow())
        await server.serve(host="localhost", port=8000)

    Keyword arguments besides ``middleware`` and ``title`` go to ``workflow_router``.
    No CORS middleware is installed: pass ``middleware=[...]`` to add your own.
    The runs dashboard is served at ``/ui`` unless ``dashboard=False``.

    ``freeze_heap`` (see ``workflow_router``): ``None`` (the default) freezes the
    process's startup heap when this package serves the app, from ``serve()``
    or the ``serve`` command, where the server is the process; ``app`` on its
    own (your uvicorn command, a test client, a mount) freezes only with
    ``True``, and ``False`` never does.
    """

    def __init__(
        self,
        workflow_store: AbstractWorkflowStore | None = None,
        *,
        middleware: Sequence[Middleware] | None = None,
        title: str = "Workflow server",
        dashboard: bool = True,
        freeze_heap: bool | None = None,
        **router_options: Any,
    ) -> None:
        self.freeze_heap = freeze_heap
        """Whether the startup heap is frozen: always, never, or (``None``) when served."""
        self.router: WorkflowRouter = workflow_router(
            workflow_store, dashboard=dashboard, freeze_heap=freeze_heap is True, **router_options
        )
        self.app = FastAPI(title=title, middleware=middleware)
        self.app.include_router(self.router)

    def served_app(self) -> FastAPI:
        """``app`` as this package serves it: its heap frozen unless ``freeze_heap=False``.

        ``serve()`` and the ``serve`` command serve this.
        """
        self.router.freeze_heap = self.freeze_heap is not False
        return self.app

    @property
    def service(self) -> WorkflowService:
        """The run service behind the routes."""
        return self.router.service

    @property
    def store(self) -> AbstractWorkflowStore:
        """The store the server writes to."""
        return self.router.store

    def add_workflow(
        self,
        name: str,
        workflow: Workflow,
        additional_events: Iterable[type[Event]] | None = None,
        *,
        version: str | None = None,
    ) -> None:
        """Serve ``workflow`` as ``name`` (see ``WorkflowRouter.add_workflow``)."""
        self.router.add_workflow(name, workflow, additional_events, version=version)

    def get_workflows(self) -> dict[str, Workflow]:
        """The registered workflows, by name, in registration order."""
        return {entry.name: entry.workflow for entry in self.service.registry}

    async def serve(
        self,
        host: str = "localhost",
        port: int = 8000,
        uvicorn_config: Mapping[str, Any] | None = None,
        *,
        log_level: str = "info",
        graceful_timeout: float = 10.0,
        **uvicorn_options: Any,
    ) -> None:
        """Serve until SIGINT or SIGTERM, then stop gracefully and return.

        ``uvicorn_config`` holds more ``uvicorn.Config`` arguments (``root_path``,
        ``log_level``...), as the reference server takes them; keyword arguments
        do the same. On the signal, open event streams end at once and runs are
        checkpointed and released (within ``stop_timeout``); ``graceful_timeout``
        bounds how long other open requests may delay the exit.
        """
        settings: dict[str, Any] = {
            "log_level": log_level,
            "timeout_graceful_shutdown": int(graceful_timeout),
            **(uvicorn_config or {}),
            **uvicorn_options,
        }
        config = uvicorn.Config(self.served_app(), host=host, port=port, **settings)
        with absorbed_stop_signals():
            await uvicorn.Server(config).serve()
