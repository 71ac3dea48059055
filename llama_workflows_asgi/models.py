"""The HTTP wire models, as the official workflow client parses them.

These describe the JSON the routes send and accept (and document it in the
host's OpenAPI schema). The routes build the JSON from these fields (``api.wire``),
so every key is always present, nulls included, in the order given here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .service import Status


class EventEnvelopeWithMetadata(BaseModel):
    """An event as the server emits it: stream items and handler results."""

    value: dict[str, Any] = Field(description="The event's fields (`model_dump(mode='json')`).")
    qualified_name: str | None = Field(
        description="`module.ClassName` of the event (deprecated; null when not requested)."
    )
    type: str = Field(description="The event class name.")
    types: list[str] | None = Field(
        description="Names of the event's Event ancestors, nearest first; null when none."
    )


class EventEnvelope(BaseModel):
    """An event as a caller sends it: by class name (`type`) and field values."""

    model_config = ConfigDict(extra="allow")

    value: Any = Field(default=None, description="The event's fields.")
    type: str | None = Field(default=None, description="The event class name.")
    qualified_name: str | None = Field(
        default=None, description="`module.ClassName`; resolved only among declared events."
    )


class HandlerData(BaseModel):
    """A handler: one run of a workflow and its outcome."""

    handler_id: str
    workflow_name: str
    run_id: str | None
    error: str | None
    result: EventEnvelopeWithMetadata | None
    result_unreadable: bool = False
    status: Status
    started_at: str
    updated_at: str | None
    completed_at: str | None


class LegacyHandlerData(HandlerData):
    """A handler as `GET /results/{id}` sends it: `result` unwrapped to its value."""

    result: Any = Field(
        description="The StopEvent's `result` (plain StopEvent) or its fields (subclasses)."
    )


class HandlersList(BaseModel):
    """A page of handlers; `next_cursor` continues the listing when more remain."""

    handlers: list[HandlerData]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page; null on the last page."
    )


class RunRequest(BaseModel):
    """Body of `POST /workflows/{name}/run` and `/run-nowait`."""

    start_event: EventEnvelope | dict[str, Any] | str | None = Field(
        default=None,
        description=(
            "The start event: an envelope, the start event's fields as an object, or a JSON "
            "string holding either. Null builds the start event from no arguments."
        ),
    )
    context: dict[str, Any] | None = Field(
        default=None, description="A serialized context; refused unless the server enables it."
    )
    handler_id: str | None = Field(default=None, description="Reuse or choose the handler id.")
    kwargs: dict[str, Any] | None = Field(
        default=None, description="Legacy: start event fields, used when `start_event` is absent."
    )


class SendEventRequest(BaseModel):
    """Body of `POST /events/{handler_id}`."""

    event: EventEnvelope | str = Field(description="The event, as an envelope or JSON string.")
    step: str | None = Field(default=None, description="Deliver only to this step.")


class HealthResponse(BaseModel):
    """Liveness of the workflow service."""

    status: Literal["healthy", "unhealthy"]
    detail: str | None = Field(default=None, description="What is wrong, when unhealthy")


class WorkflowsList(BaseModel):
    """Names of the registered workflows, in registration order."""

    workflows: list[str]


class WorkflowSchema(BaseModel):
    """JSON schemas of a workflow's start and stop events."""

    start: dict[str, Any]
    stop: dict[str, Any]


class WorkflowEventsList(BaseModel):
    """JSON schemas of the events a workflow declares."""

    events: list[dict[str, Any]]


class WorkflowGraphResponse(BaseModel):
    """A workflow's step/event graph."""

    graph: dict[str, Any]


class CancelResponse(BaseModel):
    """Outcome of a cancel request."""

    status: Literal["cancelled", "deleted"]


class SendEventResponse(BaseModel):
    """Outcome of sending an event."""

    status: Literal["sent"]


class ErrorResponse(BaseModel):
    """Every error the API raises itself."""

    detail: str
