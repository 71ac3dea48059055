"""The HTTP edge: routes by resource, parsing (``params``), framing (``wire``).

A request goes one way: FastAPI matches a route, the router's bound
dependencies (``deps``) name its service, caller and limits, the route parses
its parameters and body, calls the service once and frames what it returns.
Nothing here reads the store; the service is the only way down.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import events, handlers, health, runs, workflows
from .deps import RouterBinding


def add_api_routes(router: APIRouter, binding: RouterBinding) -> None:
    """Add every workflow route to ``router``, bound to ``binding``'s service."""
    # FastAPI tries an included router's routes in order, at a cost per route
    # tried: the routes a busy server takes most (starting runs, reading
    # handlers, events) come first, the listings of what is served last.
    runs.register(router, binding)
    handlers.register(router, binding)
    events.register(router, binding)
    workflows.register(router, binding)
    health.register(router, binding)


__all__ = ["RouterBinding", "add_api_routes"]
