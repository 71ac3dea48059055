"""Per-router binding: which service, which caller and which limits a route works with.

The route functions are plain module-level functions, shared by every router
(an application, or a test process, may hold many); each takes its router's
``RouteContext`` as first argument. What differs per router (its service, the
host's principal dependency, its limits) is bound once, at registration:
``RouterBinding.endpoint`` wraps a route function into the endpoint FastAPI
calls. The endpoint's signature is the route's own parameters (what FastAPI
reads from the request) plus, on routes scoped to the caller, the host's
principal dependency itself, so a request solves the route and at most that
dependency: nothing of ours in between, and nothing at all when the host gave
no principal. (``request.app.state``, which ``dependencies.get_workflow_service``
reads, holds one service per app and only once the lifespan ran: it cannot tell
two routers of one app apart.)
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query

from ..service import WorkflowService
from ..service.config import DEFAULT_HEARTBEAT_INTERVAL

DEFAULT_MAX_BODY_SIZE = 1024 * 1024
"""Largest request body accepted by default (1 MiB)."""

DEFAULT_SSE_HEARTBEAT = DEFAULT_HEARTBEAT_INTERVAL
"""Seconds of silence before an SSE stream sends a ``: heartbeat`` comment, by default."""

Route = Callable[..., Awaitable[Any]]
"""A route function: its router's ``RouteContext`` first, then what the request carries."""

_CALLER = "workflow_router_caller_"
"""The endpoint parameter receiving the host's principal (no route parameter is named so)."""


@dataclass(frozen=True)
class EdgeLimits:
    """What the HTTP edge of one router accepts and how it streams."""

    max_json_depth: int
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    heartbeat_interval: float | None = DEFAULT_SSE_HEARTBEAT


@dataclass(frozen=True)
class RouteContext:
    """What one request to a workflow route works with."""

    service: WorkflowService
    limits: EdgeLimits
    principal: str | None = None


class RouterBinding:
    """Binds route functions to one router's service, limits and principal dependency."""

    def __init__(
        self,
        service: WorkflowService,
        limits: EdgeLimits,
        principal: Callable[..., Any] | None = None,
    ) -> None:
        self.service = service
        self.limits = limits
        self.principal = principal
        """The host's dependency naming the caller (``None``: every request is unscoped)."""
        self.context = RouteContext(service, limits)
        """The context of a request with no principal."""
        max_page = service.config.max_page_size
        self.page_limit: Any = Annotated[int | None, Query(ge=1, le=max_page)]
        """The ``limit`` of ``GET /handlers``: up to this router's ``max_page_size``."""

    def endpoint(
        self, route: Route, *, scoped: bool = True, annotations: Mapping[str, Any] | None = None
    ) -> Route:
        """``route`` as this router's endpoint, with the principal if ``scoped``.

        ``annotations`` replaces the annotations of some of the route's
        parameters (a limit that depends on the router's configuration).
        """
        signature = inspect.signature(route, eval_str=True)
        replaced = annotations or {}
        parameters = [
            p.replace(annotation=replaced.get(p.name, p.annotation))
            for p in list(signature.parameters.values())[1:]
        ]
        if scoped and self.principal is not None:
            bound = _with_caller(route, self.context)
            caller = Annotated[Any, Depends(self.principal)]
            parameters.append(
                inspect.Parameter(_CALLER, inspect.Parameter.KEYWORD_ONLY, annotation=caller)
            )
        else:
            bound = _with_context(route, self.context)
        described = {
            "__signature__": signature.replace(parameters=parameters),
            "__name__": route.__name__,  # the OpenAPI operation id
            "__qualname__": route.__qualname__,
            "__doc__": route.__doc__,  # the OpenAPI description
            "__module__": route.__module__,
        }
        for attribute, value in described.items():
            setattr(bound, attribute, value)
        return bound


def _with_context(route: Route, context: RouteContext) -> Route:
    async def endpoint(**values: Any) -> Any:
        return await route(context, **values)

    return endpoint


def _with_caller(route: Route, base: RouteContext) -> Route:
    async def endpoint(**values: Any) -> Any:
        caller = values.pop(_CALLER)
        context = base if caller is None else RouteContext(base.service, base.limits, str(caller))
        return await route(context, **values)

    return endpoint
