"""``POST /workflows/{name}/run`` and ``/run-nowait``: starting runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from .._http import json_body_doc, read_json_body
from ..errors import BadRequestError
from ..models import HandlerData, RunRequest
from ..service import PersistentHandler
from . import params
from .deps import RouteContext, RouterBinding
from .responses import BAD_INPUT, CONFLICT, NOT_FOUND, UNAVAILABLE, Responses
from .wire import handler_response

# Starting a run stays in the route functions, not in a dependency: FastAPI
# still calls a route's other dependencies after one failed validation (a
# missing principal header), and a run must never start then. FastAPI calls
# the route itself only once every dependency and parameter is valid.
#
# The workflow name (path) and the Idempotency-Key header are read here, not
# declared as FastAPI parameters: these two routes start every run, and
# solving two declared parameters costs more per request than the rest of the
# edge (they are documented by hand, see ``_PARAMETERS``).

MAX_IDEMPOTENCY_KEY = 255
"""The longest Idempotency-Key accepted (the stored column's size)."""

_PARAMETERS: list[dict[str, Any]] = [
    {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "title": "Name"}},
    {
        "name": "idempotency-key",
        "in": "header",
        "required": False,
        "schema": {
            "anyOf": [{"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY}, {"type": "null"}],
            "title": "Idempotency-Key",
        },
    },
]


async def run_workflow_nowait(route: RouteContext, request: Request) -> Response:
    """Start a run and answer at once with its (running) handler."""
    handler = await _start(request, route)
    return handler_response(handler)


async def run_workflow(route: RouteContext, request: Request) -> Response:
    """Start a run and answer when it has finished (500 with the handler if it failed)."""
    handler = await _start(request, route)
    done = await route.service.wait_for(handler.handler_id, principal=route.principal)
    return handler_response(done, 200 if done.status == "completed" else 500)


async def _start(request: Request, route: RouteContext) -> PersistentHandler:
    service, limits = route.service, route.limits
    name: str = request.path_params["name"]
    idempotency_key = _idempotency_key(request.headers.get("idempotency-key"))
    entry = service.registry.get(name)
    body = await read_json_body(request, limits.max_body_size, limits.max_json_depth)
    fields = params.json_object(body)
    # The fingerprint only tells a replay from a reused key: no key, no digest.
    digest = None if idempotency_key is None else params.fingerprint(name, fields)
    return await service.start_run(
        name,
        params.start_event(entry, fields),
        handler_id=params.body_handler_id(fields.get("handler_id")),
        principal=route.principal,
        context=params.context_field(fields.get("context")),
        idempotency_key=idempotency_key,
        request_hash=digest,
    )


def _idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header as given (``None``: absent); 400 when it is too long."""
    if value is not None and len(value) > MAX_IDEMPOTENCY_KEY:
        raise BadRequestError(
            "Invalid request: idempotency-key: "
            f"String should have at most {MAX_IDEMPOTENCY_KEY} characters"
        )
    return value


def register(router: APIRouter, binding: RouterBinding) -> None:
    """Add the two routes that start runs."""
    errors: Responses = {**NOT_FOUND, **BAD_INPUT, **CONFLICT, **UNAVAILABLE}
    failed: Responses = {
        500: {"model": HandlerData, "description": "The run failed or was cancelled"}
    }
    for path, endpoint, responses in (
        ("/workflows/{name}/run-nowait", run_workflow_nowait, errors),
        ("/workflows/{name}/run", run_workflow, {**errors, **failed}),
    ):
        router.add_api_route(
            path,
            binding.endpoint(endpoint),
            methods=["POST"],
            response_model=HandlerData,
            responses=responses,
            openapi_extra={**json_body_doc(RunRequest), "parameters": _PARAMETERS},
        )
