"""The answers each route documents besides its 200, for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from ..models import ErrorResponse, EventEnvelopeWithMetadata, HandlerData, LegacyHandlerData

Responses = dict[int | str, dict[str, Any]]

NOT_FOUND: Responses = {404: {"model": ErrorResponse}}
BAD_INPUT: Responses = {400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}}
UNAVAILABLE: Responses = {503: {"model": ErrorResponse}}
CONFLICT: Responses = {409: {"model": ErrorResponse}}
HANDLER_CODES: Responses = {
    202: {"model": HandlerData, "description": "Still running"},
    500: {"model": HandlerData, "description": "Failed or cancelled"},
    **NOT_FOUND,
}
LEGACY_CODES: Responses = {
    202: {"model": LegacyHandlerData},
    500: {"model": LegacyHandlerData},
    **NOT_FOUND,
}
STREAM: Responses = {
    200: {
        "description": "SSE frames (`id: <sequence>`, `data: <event>`) or NDJSON lines",
        "content": {
            "text/event-stream": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": EventEnvelopeWithMetadata.model_json_schema()},
        },
    },
    204: {"description": "The run has finished and no event is left after the cursor"},
    **NOT_FOUND,
    **BAD_INPUT,
}
