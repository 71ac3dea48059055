"""``GET /health``: whether the router's service runs and keeps up."""

from __future__ import annotations

from fastapi import APIRouter, Response

from .._http import json_response
from ..models import HealthResponse
from .deps import RouteContext, RouterBinding


async def health(route: RouteContext) -> Response:
    """Whether the service runs, its store answers and its background work keeps up."""
    problem = await route.service.health_problem()
    if problem is None:
        return json_response({"status": "healthy"})
    return json_response({"status": "unhealthy", "detail": problem}, 503)


async def open_health(route: RouteContext) -> Response:
    """Like ``health``, naming only what is wrong, not why (no driver text, no hosts)."""
    problem = await route.service.health_problem()
    if problem is None:
        return json_response({"status": "healthy"})
    return json_response({"status": "unhealthy", "detail": problem.split(":", 1)[0]}, 503)


def register(
    router: APIRouter, binding: RouterBinding, path: str = "/health", *, public: bool = False
) -> None:
    """Add the health route; it asks for no principal (probes carry no credentials).

    A ``public`` route (served outside the host's auth) says what is wrong
    without the underlying error's text, which may name database hosts.
    """
    router.add_api_route(
        path,
        binding.endpoint(open_health if public else health, scoped=False),
        methods=["GET"],
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse}},
    )
