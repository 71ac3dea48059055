"""Per-router dependencies: which service, which caller and which limits a request gets.

The route functions are plain module-level functions, shared by every router
(an application, or a test process, may hold many). What differs per router
(its service, the host's principal dependency, its limits) is bound once, in
``RouterBinding``, as dependencies attached to each route at registration
(``dependencies=binding.caller``). FastAPI solves them before the dependencies
in the route's signature; they leave a ``RouteContext`` on the request, whose
parts ``ServiceDep``, ``PrincipalDep``, ``LimitsDep`` and ``PageLimitDep`` hand
to the route (``RouteDep`` hands all of it, one dependency to solve instead of
three). (``request.app.state``, which ``dependencies.get_workflow_service``
reads, holds one service per app and only once the lifespan ran: it cannot tell
two routers of one app apart.)
"""

# No ``from __future__ import annotations``: the bound dependencies name the
# host's principal dependency and the page size, which FastAPI can only see in
# eagerly evaluated annotations.

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, cast

from fastapi import Depends, Query, Request
from fastapi.params import Depends as DependsParam

from ..service import WorkflowService
from ..service.config import DEFAULT_HEARTBEAT_INTERVAL

_STATE_KEY = "workflow_route_context"

DEFAULT_MAX_BODY_SIZE = 1024 * 1024
"""Largest request body accepted by default (1 MiB)."""

DEFAULT_SSE_HEARTBEAT = DEFAULT_HEARTBEAT_INTERVAL
"""Seconds of silence before an SSE stream sends a ``: heartbeat`` comment, by default."""


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
    page_limit: int | None = None


class RouterBinding:
    """The dependencies binding one router's routes to its service and principal."""

    def __init__(
        self, service: WorkflowService, limits: EdgeLimits, principal: Callable[..., Any]
    ) -> None:
        self.service = service
        self.limits = limits
        base = RouteContext(service, limits)
        self.open: list[DependsParam] = [Depends(_bind_open(base))]
        """For routes that ask no principal (health)."""
        self.caller: list[DependsParam] = [Depends(_bind_caller(base, principal))]
        """For routes scoped to the caller: the principal is resolved once, here."""
        max_page = service.config.max_page_size
        self.listing: list[DependsParam] = [Depends(_bind_listing(base, principal, max_page))]
        """For ``GET /handlers``: the caller and the page size, up to ``max_page_size``."""


def _bind_open(base: RouteContext) -> Callable[[Request], Awaitable[None]]:
    async def bind_open(request: Request) -> None:
        setattr(request.state, _STATE_KEY, base)

    return bind_open


def _bind_caller(
    base: RouteContext, principal: Callable[..., Any]
) -> Callable[..., Awaitable[None]]:
    async def bind_caller(request: Request, caller: Annotated[Any, Depends(principal)]) -> None:
        setattr(request.state, _STATE_KEY, _with_principal(base, caller))

    return bind_caller


def _bind_listing(
    base: RouteContext, principal: Callable[..., Any], max_page: int
) -> Callable[..., Awaitable[None]]:
    async def bind_listing(
        request: Request,
        caller: Annotated[Any, Depends(principal)],
        limit: Annotated[int | None, Query(ge=1, le=max_page)] = None,
    ) -> None:
        context = replace(_with_principal(base, caller), page_limit=limit)
        setattr(request.state, _STATE_KEY, context)

    return bind_listing


def _with_principal(base: RouteContext, caller: Any) -> RouteContext:
    return replace(base, principal=None if caller is None else str(caller))


class _Unbound:
    """Stands in for the context when the bound dependency did not run.

    FastAPI solves every dependency of a route even after one failed validation
    (a missing principal header, a ``limit`` too large), then answers with those
    errors without calling the route: this only has to get that far. A route
    registered without its binding fails loudly on first use.
    """

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("workflow route registered without its RouterBinding dependencies")


_UNBOUND: Any = _Unbound()


def _part(request: Request, name: str, unbound: Any) -> Any:
    context = getattr(request.state, _STATE_KEY, None)
    return getattr(context, name) if isinstance(context, RouteContext) else unbound


# async: FastAPI would run a plain function in a worker thread, per request.


async def route_service(request: Request) -> WorkflowService:
    """The run service of the router serving this request."""
    return cast("WorkflowService", _part(request, "service", _UNBOUND))


async def route_principal(request: Request) -> str | None:
    """The caller, as the host's principal dependency named it (``None`` when unscoped)."""
    return cast("str | None", _part(request, "principal", None))


async def route_limits(request: Request) -> EdgeLimits:
    """The body, depth and heartbeat limits of the router serving this request."""
    return cast("EdgeLimits", _part(request, "limits", _UNBOUND))


async def route_context(request: Request) -> RouteContext:
    """The whole context of the router serving this request (for the routes starting runs)."""
    context = getattr(request.state, _STATE_KEY, None)
    return context if isinstance(context, RouteContext) else cast("RouteContext", _UNBOUND)


async def page_limit(request: Request) -> int | None:
    """The ``limit`` query parameter of ``GET /handlers``, checked against the page size."""
    return cast("int | None", _part(request, "page_limit", None))


ServiceDep = Annotated[WorkflowService, Depends(route_service)]
PrincipalDep = Annotated[str | None, Depends(route_principal)]
LimitsDep = Annotated[EdgeLimits, Depends(route_limits)]
PageLimitDep = Annotated[int | None, Depends(page_limit)]
RouteDep = Annotated[RouteContext, Depends(route_context)]
