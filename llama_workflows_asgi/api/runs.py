"""``POST /workflows/{name}/run`` and ``/run-nowait``: starting runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from .._http import json_body_doc, read_json_body
from ..models import HandlerData, RunRequest
from ..service import PersistentHandler
from . import params
from .deps import RouteContext, RouterBinding
from .responses import BAD_INPUT, CONFLICT, NOT_FOUND, UNAVAILABLE, Responses
from .wire import handler_response

IdempotencyKey = Annotated[str | None, Header(max_length=255)]

# Starting a run stays in the route functions, not in a dependency: FastAPI
# still calls a route's other dependencies after one failed validation (a
# missing principal header), and a run must never start then. FastAPI calls
# the route itself only once every dependency and parameter is valid.


async def run_workflow_nowait(
    route: RouteContext, name: str, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    """Start a run and answer at once with its (running) handler."""
    handler = await _start(name, request, route, idempotency_key)
    return handler_response(handler)


async def run_workflow(
    route: RouteContext, name: str, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    """Start a run and answer when it has finished (500 with the handler if it failed)."""
    handler = await _start(name, request, route, idempotency_key)
    done = await route.service.wait_for(handler.handler_id, principal=route.principal)
    return handler_response(done, 200 if done.status == "completed" else 500)


async def _start(
    name: str, request: Request, route: RouteContext, idempotency_key: str | None
) -> PersistentHandler:
    service, limits = route.service, route.limits
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
            openapi_extra=json_body_doc(RunRequest),
        )
