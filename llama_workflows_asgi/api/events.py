"""``/events/{handler_id}``: streaming a run's events, and sending events into it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from .._http import json_body_doc, json_response, read_json_body
from ..models import SendEventRequest, SendEventResponse
from . import params
from .deps import RouteContext, RouterBinding
from .responses import BAD_INPUT, CONFLICT, NOT_FOUND, STREAM, UNAVAILABLE
from .wire import stream_response


async def stream_events(
    route: RouteContext,
    handler_id: str,
    sse: str | None = None,
    after_sequence: str | None = None,
    include_internal: str | None = None,
    include_qualified_name: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """The run's events after a cursor, live until its final event (SSE by default)."""
    as_sse = params.flag(sse, "sse", True)
    with_names = params.flag(include_qualified_name, "include_qualified_name", True)
    stream = await route.service.open_stream(
        handler_id,
        principal=route.principal,
        after=params.stream_position(after_sequence, last_event_id, as_sse),
        include_internal=params.flag(include_internal, "include_internal", False),
    )
    if stream is None:
        return Response(status_code=204)
    return stream_response(stream, as_sse, with_names, route.limits.heartbeat_interval)


async def send_event(route: RouteContext, handler_id: str, request: Request) -> Response:
    """Send an event into a running handler (human-in-the-loop answers, signals)."""
    limits = route.limits
    body = await read_json_body(request, limits.max_body_size, limits.max_json_depth)
    event, step = params.event_body(body)
    await route.service.send_event(handler_id, event, step=step, principal=route.principal)
    return json_response({"status": "sent"})


def register(router: APIRouter, binding: RouterBinding) -> None:
    """Add the stream and send routes, scoped to the caller."""
    router.add_api_route(
        "/events/{handler_id}",
        binding.endpoint(stream_events),
        methods=["GET"],
        response_class=StreamingResponse,
        responses=STREAM,
    )
    router.add_api_route(
        "/events/{handler_id}",
        binding.endpoint(send_event),
        methods=["POST"],
        response_model=SendEventResponse,
        responses={**NOT_FOUND, **BAD_INPUT, **CONFLICT, **UNAVAILABLE},
        openapi_extra=json_body_doc(SendEventRequest),
    )
