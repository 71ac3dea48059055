"""``workflow_router``: the workflow HTTP API as an ``APIRouter`` a host app includes."""

# No ``from __future__ import annotations`` here: the route signatures use
# dependencies built per router (the host's principal dependency, the page
# size), and FastAPI can only see those if annotations are evaluated eagerly.

import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from workflows import Workflow
from workflows.events import Event
from workflows.representation import get_workflow_representation

from . import codec
from ._http import WorkflowRoute, error_response, json_body_doc, json_response, read_json_body
from ._signals import chained_stop_signals
from .dashboard import add_dashboard_routes
from .errors import BadRequestError, StoreUnavailableError
from .models import (
    CancelResponse,
    ErrorResponse,
    EventEnvelopeWithMetadata,
    HandlerData,
    HandlersList,
    HealthResponse,
    LegacyHandlerData,
    RunRequest,
    SendEventRequest,
    SendEventResponse,
    WorkflowEventsList,
    WorkflowGraphResponse,
    WorkflowSchema,
    WorkflowsList,
)
from .registry import RegisteredWorkflow
from .service.config import ServiceConfig
from .service.service import WorkflowService, check_handler_id
from .service.streams import EventStream, Heartbeat
from .store.base import (
    AbstractWorkflowStore,
    HandlerCursor,
    HandlerQuery,
    PersistentHandler,
    Status,
    StoredEvent,
)
from .store.memory import MemoryWorkflowStore

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_SIZE = 1024 * 1024
"""Largest request body accepted by default (1 MiB)."""

_STATUSES: frozenset[str] = frozenset({"running", "completed", "failed", "cancelled"})
_HANDLER_STATUS_CODE: dict[str, int] = {
    "running": 202,
    "completed": 200,
    "failed": 500,
    "cancelled": 500,
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}
_BAD_INPUT: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
}
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: {"model": ErrorResponse}}
_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorResponse}}
_HANDLER_CODES: dict[int | str, dict[str, Any]] = {
    202: {"model": HandlerData, "description": "Still running"},
    500: {"model": HandlerData, "description": "Failed or cancelled"},
    **_NOT_FOUND,
}
_LEGACY_CODES: dict[int | str, dict[str, Any]] = {
    202: {"model": LegacyHandlerData},
    500: {"model": LegacyHandlerData},
    **_NOT_FOUND,
}
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "SSE frames (`id: <sequence>`, `data: <event>`) or NDJSON lines",
        "content": {
            "text/event-stream": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": EventEnvelopeWithMetadata.model_json_schema()},
        },
    },
    204: {"description": "The run has finished and no event is left after the cursor"},
    **_NOT_FOUND,
    **_BAD_INPUT,
}


class WorkflowRouter(APIRouter):
    """An ``APIRouter`` serving workflows, with the run service behind it.

    Include it with ``app.include_router(router, prefix=..., dependencies=[...])``;
    its lifespan (open the store, resume interrupted runs, stop gracefully on
    SIGINT or SIGTERM, release runs on shutdown) is merged into the host's. A
    host that mounts instead of including enters ``router.lifespan_context(app)``
    in its own lifespan.
    """

    def __init__(self, service: WorkflowService, **kwargs: Any) -> None:
        super().__init__(route_class=WorkflowRoute, lifespan=self._lifespan, **kwargs)
        self.service = service

    @property
    def store(self) -> AbstractWorkflowStore:
        """The store the service writes to."""
        return self.service.store

    def add_workflow(
        self, name: str, workflow: Workflow, additional_events: Iterable[type[Event]] | None = None
    ) -> None:
        """Serve ``workflow`` under ``/workflows/{name}``.

        ``additional_events`` declares events a step waits for with
        ``ctx.wait_for_event`` without naming them in its signature, so callers
        may send them.
        """
        self.service.add_workflow(name, workflow, additional_events or ())

    def health_router(self, path: str = "/health") -> APIRouter:
        """A router holding only the health route, for probes that carry no credentials.

        Include it without the dependencies the workflow routes get::

            app.include_router(workflows, prefix="/wf", dependencies=[Depends(auth)])
            app.include_router(workflows.health_router())  # GET /health, open

        It reports on this router's service and needs no lifespan of its own.
        """
        router = APIRouter(route_class=WorkflowRoute)
        _add_health_route(router, self.service, path)
        return router

    @asynccontextmanager
    async def _lifespan(self, app: Any) -> AsyncIterator[None]:
        state = getattr(app, "state", None)
        if state is not None:
            state.workflow_service = self.service
        service = self.service
        async with service.running_context():
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
    sse_heartbeat_interval: float | None = 25.0,
    dashboard: bool = False,
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
        router_kwargs: Passed to ``APIRouter`` (``prefix``, ``tags``, ``dependencies``...).
    """
    service = WorkflowService(
        store or MemoryWorkflowStore(), config=config, scoped=principal is not None
    )
    router = WorkflowRouter(service, **router_kwargs)
    for name, workflow in (workflows or {}).items():
        router.add_workflow(name, workflow)
    _Routes(
        router, service, principal or _anonymous, max_body_size, sse_heartbeat_interval
    ).add_all()
    if dashboard:
        add_dashboard_routes(router)
    return router


def _add_health_route(router: APIRouter, service: WorkflowService, path: str = "/health") -> None:
    @router.get(path, response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health() -> Response:
        """Whether the service runs, its store answers and its background work keeps up."""
        problem = await service.health_problem()
        if problem is None:
            return json_response({"status": "healthy"})
        return json_response({"status": "unhealthy", "detail": problem}, 503)


async def _anonymous() -> None:
    # async: FastAPI would run a plain function in a worker thread, per request.
    return None


def handler_json(handler: PersistentHandler) -> dict[str, Any]:
    """A handler as the wire's ``HandlerData``."""
    return {
        "handler_id": handler.handler_id,
        "workflow_name": handler.workflow_name,
        "run_id": handler.run_id,
        "error": handler.error,
        "result": handler.result_envelope(),
        "result_unreadable": False,
        "status": handler.status,
        "started_at": handler.started_at.isoformat(),
        "updated_at": None if handler.updated_at is None else handler.updated_at.isoformat(),
        "completed_at": None if handler.completed_at is None else handler.completed_at.isoformat(),
    }


def _handler_response(handler: PersistentHandler) -> Response:
    return json_response(handler_json(handler), _HANDLER_STATUS_CODE[handler.status])


def _flag(value: str | None, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequestError(f"Invalid {name}: {value!r} (expected true or false)")


_MAX_SEQUENCE = 2**63 - 1
"""Sequences are 64-bit integers in the database: a cursor past this cannot exist."""
_INTEGER = re.compile(r"\s*(-?[0-9]+)\s*", re.ASCII)


def _sequence(text: str) -> int | None:
    """``text`` as a sequence cursor (ASCII digits, -1 or more, within 64 bits), else ``None``."""
    match = _INTEGER.fullmatch(text)
    if match is None:
        return None
    value = int(match.group(1))
    return value if -1 <= value <= _MAX_SEQUENCE else None


def _cursor_position(
    after_sequence: str | None, last_event_id: str | None, sse: bool
) -> int | Literal["now"]:
    if sse and last_event_id is not None and _INTEGER.fullmatch(last_event_id):
        position = _sequence(last_event_id)
        if position is None and not last_event_id.strip().startswith("-"):
            raise BadRequestError(f"Invalid Last-Event-ID: {last_event_id.strip()[:40]!r}")
        return -1 if position is None else position
    if after_sequence is None or after_sequence == "now":
        return "now"
    position = _sequence(after_sequence)
    if position is None:
        raise BadRequestError(
            f"Invalid after_sequence: {after_sequence[:40]!r} "
            f"(expected now or an integer from -1 to {_MAX_SEQUENCE})"
        )
    return position


def _status_filter(values: list[str] | None) -> list[Status] | None:
    given = [v for v in values or [] if v]
    unknown = [v for v in given if v not in _STATUSES]
    if unknown:
        raise BadRequestError(
            f"Invalid status: {unknown[0]!r} (expected running, completed, failed or cancelled)"
        )
    return cast("list[Status]", given) or None


def _check_handler_id(handler_id: Any) -> str | None:
    if handler_id is None:
        return None
    if not isinstance(handler_id, str):
        raise BadRequestError("Invalid handler_id: it must be a string")
    return check_handler_id(handler_id)


def _fingerprint(name: str, body: Any) -> str:
    canonical = json.dumps([name, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class _Routes:
    """Defines every route on a router, bound to its service."""

    def __init__(
        self,
        router: WorkflowRouter,
        service: WorkflowService,
        principal: Callable[..., Any],
        max_body_size: int,
        heartbeat: float | None,
    ) -> None:
        self.router = router
        self.service = service
        self.principal = principal
        self.max_body_size = max_body_size
        self.max_json_depth = service.config.max_json_depth
        self.heartbeat = heartbeat

    def add_all(self) -> None:
        self._workflow_routes()
        self._run_routes()
        self._handler_routes()
        self._cancel_route()
        self._retry_route()
        self._stream_route()
        self._send_route()

    # -- workflows ----------------------------------------------------------------------

    def _workflow_routes(self) -> None:
        router, service = self.router, self.service

        _add_health_route(router, service)

        @router.get("/workflows", response_model=WorkflowsList)
        async def list_workflows() -> Response:
            """Names of the registered workflows."""
            return json_response({"workflows": service.registry.names})

        @router.get("/workflows/{name}/schema", response_model=WorkflowSchema, responses=_NOT_FOUND)
        async def workflow_schema(name: str) -> Response:
            """JSON schemas of the workflow's start and stop events."""
            workflow = service.registry.get(name).workflow
            start: type[Event] = workflow.start_event_class
            stop: type[Event] = workflow.stop_event_class
            return json_response(
                {"start": start.model_json_schema(), "stop": stop.model_json_schema()}
            )

        @router.get(
            "/workflows/{name}/events", response_model=WorkflowEventsList, responses=_NOT_FOUND
        )
        async def workflow_events(name: str) -> Response:
            """JSON schemas of the events the workflow declares (and accepts)."""
            events = service.registry.get(name).declared_events
            return json_response({"events": [event.model_json_schema() for event in events]})

        @router.get(
            "/workflows/{name}/representation",
            response_model=WorkflowGraphResponse,
            responses=_NOT_FOUND,
        )
        async def workflow_representation(name: str) -> Response:
            """The workflow's graph of steps and events (minus server paths and config values)."""
            graph = get_workflow_representation(service.registry.get(name).workflow)
            return json_response({"graph": _redacted_graph(graph.model_dump(mode="json"))})

    # -- runs -------------------------------------------------------------------------------

    def _run_routes(self) -> None:
        router = self.router
        principal_dep = Annotated[Any, Depends(self.principal)]
        run_doc = json_body_doc(RunRequest)
        errors = {**_NOT_FOUND, **_BAD_INPUT, **_CONFLICT, **_UNAVAILABLE}

        @router.post(
            "/workflows/{name}/run-nowait",
            response_model=HandlerData,
            responses=errors,
            openapi_extra=run_doc,
        )
        async def run_workflow_nowait(
            name: str,
            request: Request,
            principal: principal_dep,
            idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
        ) -> Response:
            """Start a run and answer at once with its (running) handler."""
            handler = await self._start(name, request, principal, idempotency_key)
            return json_response(handler_json(handler))

        @router.post(
            "/workflows/{name}/run",
            response_model=HandlerData,
            responses={
                **errors,
                500: {"model": HandlerData, "description": "The run failed or was cancelled"},
            },
            openapi_extra=run_doc,
        )
        async def run_workflow(
            name: str,
            request: Request,
            principal: principal_dep,
            idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
        ) -> Response:
            """Start a run and answer when it has finished (500 with the handler if it failed)."""
            handler = await self._start(name, request, principal, idempotency_key)
            done = await self.service.wait_for(
                handler.handler_id, principal=_principal_id(principal)
            )
            return json_response(handler_json(done), 200 if done.status == "completed" else 500)

    async def _start(
        self, name: str, request: Request, principal: Any, idempotency_key: str | None
    ) -> PersistentHandler:
        entry = self.service.registry.get(name)
        body = await read_json_body(request, self.max_body_size, self.max_json_depth)
        if not isinstance(body, dict):
            raise BadRequestError("Request body must be a JSON object")
        return await self.service.start_run(
            name,
            _start_event(entry, body),
            handler_id=_check_handler_id(body.get("handler_id")),
            principal=_principal_id(principal),
            context=_context_field(body.get("context")),
            idempotency_key=idempotency_key,
            request_hash=_fingerprint(name, body),
        )

    # -- handlers -----------------------------------------------------------------------------

    def _handler_routes(self) -> None:
        router, service = self.router, self.service
        principal_dep = Annotated[Any, Depends(self.principal)]
        max_page = service.config.max_page_size

        @router.get("/handlers", response_model=HandlersList, responses=_BAD_INPUT)
        async def list_handlers(
            principal: principal_dep,
            status: Annotated[list[str] | None, Query()] = None,
            workflow_name: Annotated[list[str] | None, Query()] = None,
            handler_id: Annotated[list[str] | None, Query()] = None,
            limit: Annotated[int | None, Query(ge=1, le=max_page)] = None,
            cursor: Annotated[str | None, Query(max_length=1024)] = None,
            order: Literal["asc", "desc"] = "asc",
        ) -> Response:
            """Handlers, oldest first (``order=desc`` for newest first), a page at a time."""
            query = HandlerQuery(
                status_in=_status_filter(status),
                workflow_name_in=[w for w in workflow_name or [] if w] or None,
                handler_id_in=[h for h in handler_id or [] if h] or None,
                descending=order == "desc",
                after=None if not cursor else HandlerCursor.decode(cursor),
                limit=limit,
            )
            page = await service.list_handlers(query, principal=_principal_id(principal))
            next_cursor = None if page.next_cursor is None else page.next_cursor.encode()
            return json_response(
                {"handlers": [handler_json(h) for h in page.handlers], "next_cursor": next_cursor}
            )

        @router.get("/handlers/{handler_id}", response_model=HandlerData, responses=_HANDLER_CODES)
        async def get_handler(handler_id: str, principal: principal_dep) -> Response:
            """The handler; 200 when completed, 202 while running, 500 if failed or cancelled."""
            return _handler_response(
                await service.get(handler_id, principal=_principal_id(principal))
            )

        @router.get(
            "/results/{handler_id}",
            response_model=LegacyHandlerData,
            responses=_LEGACY_CODES,
            deprecated=True,
        )
        async def get_result(handler_id: str, principal: principal_dep) -> Response:
            """Like ``GET /handlers/{id}`` with the result unwrapped to its value (legacy)."""
            handler = await service.get(handler_id, principal=_principal_id(principal))
            body = handler_json(handler)
            body["result"] = _legacy_result(handler.result_envelope())
            return json_response(body, _HANDLER_STATUS_CODE[handler.status])

    def _cancel_route(self) -> None:
        service = self.service
        principal_dep = Annotated[Any, Depends(self.principal)]

        @self.router.post(
            "/handlers/{handler_id}/cancel",
            response_model=CancelResponse,
            responses={**_NOT_FOUND, **_BAD_INPUT, **_CONFLICT},
        )
        async def cancel_handler(
            handler_id: str, principal: principal_dep, purge: str | None = None
        ) -> Response:
            """Cancel a running handler; with ``purge=true`` also delete it (finished or not)."""
            outcome = await service.cancel(
                handler_id, purge=_flag(purge, "purge", False), principal=_principal_id(principal)
            )
            return json_response({"status": outcome})

    def _retry_route(self) -> None:
        service = self.service
        principal_dep = Annotated[Any, Depends(self.principal)]

        @self.router.post(
            "/handlers/{handler_id}/retry",
            response_model=HandlerData,
            responses={**_NOT_FOUND, **_CONFLICT, **_UNAVAILABLE},
        )
        async def retry_handler(handler_id: str, principal: principal_dep) -> Response:
            """Run a failed handler again from its last checkpoint (409 unless it failed)."""
            handler = await service.retry(handler_id, principal=_principal_id(principal))
            return json_response(handler_json(handler))

    # -- events -------------------------------------------------------------------------------

    def _stream_route(self) -> None:
        service = self.service
        principal_dep = Annotated[Any, Depends(self.principal)]

        @self.router.get(
            "/events/{handler_id}", response_class=StreamingResponse, responses=_STREAM_DOC
        )
        async def stream_events(
            handler_id: str,
            principal: principal_dep,
            sse: str | None = None,
            after_sequence: str | None = None,
            include_internal: str | None = None,
            include_qualified_name: str | None = None,
            last_event_id: Annotated[str | None, Header()] = None,
        ) -> Response:
            """The run's events after a cursor, live until its final event (SSE by default)."""
            as_sse = _flag(sse, "sse", True)
            with_names = _flag(include_qualified_name, "include_qualified_name", True)
            stream = await service.open_stream(
                handler_id,
                principal=_principal_id(principal),
                after=_cursor_position(after_sequence, last_event_id, as_sse),
                include_internal=_flag(include_internal, "include_internal", False),
                heartbeat_interval=self.heartbeat if as_sse else None,
            )
            if stream is None:
                return Response(status_code=204)
            return _stream_response(stream, as_sse, with_names)

    def _send_route(self) -> None:
        service = self.service
        principal_dep = Annotated[Any, Depends(self.principal)]

        @self.router.post(
            "/events/{handler_id}",
            response_model=SendEventResponse,
            responses={**_NOT_FOUND, **_BAD_INPUT, **_CONFLICT, **_UNAVAILABLE},
            openapi_extra=json_body_doc(SendEventRequest),
        )
        async def send_event(
            handler_id: str, request: Request, principal: principal_dep
        ) -> Response:
            """Send an event into a running handler (human-in-the-loop answers, signals)."""
            body = await read_json_body(request, self.max_body_size, self.max_json_depth)
            event, step = _event_body(body)
            await service.send_event(
                handler_id, event, step=step, principal=_principal_id(principal)
            )
            return json_response({"status": "sent"})


def _event_body(body: Any) -> tuple[Any, str | None]:
    if not isinstance(body, dict):
        raise BadRequestError("Request body must be a JSON object")
    event, step = body.get("event"), body.get("step")
    if not event:
        raise BadRequestError("Event data is required")
    if step is not None and not isinstance(step, str):
        raise BadRequestError("Invalid step: it must be a string")
    return event, step


def _principal_id(principal: Any) -> str | None:
    return None if principal is None else str(principal)


def _start_event(entry: RegisteredWorkflow, body: dict[str, Any]) -> Any:
    if "start_event" in body:
        payload = body["start_event"]
        if payload is None:
            return None
    else:
        payload = body.get("kwargs") or {}
    try:
        return entry.events.decode_start(payload)
    except BadRequestError as exc:
        raise type(exc)(f"Invalid start_event: {exc}") from exc


_PRIVATE_NODE_FIELDS = ("source_file", "source_line", "config_file", "config_value")


def _redacted_graph(graph: dict[str, Any]) -> dict[str, Any]:
    """The graph without where resources live on the server or what their configs hold."""
    for node in graph.get("nodes", []):
        for key in _PRIVATE_NODE_FIELDS:
            if key in node:
                node[key] = None
    return graph


def _context_field(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str) and value:
        # A context may come as the JSON text of one, as a start event may.
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise BadRequestError("Invalid context: not a JSON object") from None
    if value is None or value == "" or isinstance(value, dict):
        return value or None
    raise BadRequestError("Invalid context: it must be a JSON object")


def _legacy_result(result: dict[str, Any] | None) -> Any:
    if result is None:
        return None
    value = result.get("value") or {}
    if result.get("qualified_name") == "workflows.events.StopEvent":
        return value.get("result")
    return value


def _stream_response(stream: EventStream, sse: bool, with_names: bool) -> Response:
    def frame(event: StoredEvent) -> str:
        payload = event.payload if with_names else codec.without_qualified_name(event.payload)
        return f"id: {event.sequence}\ndata: {payload}\n\n" if sse else payload + "\n"

    async def frames() -> AsyncIterator[bytes]:
        # Everything written since the last read goes out in one chunk.
        try:
            async for item in stream:
                if isinstance(item, Heartbeat):
                    yield b": heartbeat\n\n"
                else:
                    yield "".join(frame(event) for event in item).encode()
        except StoreUnavailableError as exc:
            # The client reconnects from its last sequence once the store is back.
            logger.warning("ending the stream of run %s: %s", stream.run_id, exc)
        except Exception:
            logger.exception("ending the stream of run %s", stream.run_id)

    if sse:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)
    return StreamingResponse(frames(), media_type="application/x-ndjson")


__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "WorkflowRouter",
    "error_response",
    "handler_json",
    "workflow_router",
]
