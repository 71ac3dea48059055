"""What goes out on the wire: handlers as JSON, status codes, SSE and NDJSON framing.

The bytes are compact JSON with every key present, in the order of the wire
models (``models``); clients and tests compare them as they come.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from fastapi import Response
from fastapi.responses import StreamingResponse
from pydantic.fields import FieldInfo

from .. import codec
from .._http import json_response
from ..errors import StoreUnavailableError
from ..models import HandlerData
from ..service import EventStream, PersistentHandler, StoredEvent
from .heartbeat import Heartbeat, with_heartbeats

logger = logging.getLogger(__name__)

HANDLER_STATUS_CODE: dict[str, int] = {
    "running": 202,
    "completed": 200,
    "failed": 500,
    "cancelled": 500,
}
"""``GET /handlers/{id}`` answers with the handler under the status code of its state."""

_HEARTBEAT_FRAME = b": heartbeat\n\n"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _reader(name: str, field: FieldInfo) -> Callable[[PersistentHandler], Any]:
    """How the wire field ``name`` is read from a handler."""
    if name == "result":
        return PersistentHandler.result_envelope  # the envelope as stored, keys untouched
    source = PersistentHandler.model_fields.get(name)
    if source is None:
        if field.is_required():
            raise TypeError(f"HandlerData.{name} has no source in PersistentHandler")
        default = field.get_default(call_default_factory=True)
        return lambda _: default
    read = operator.attrgetter(name)
    if source.annotation in (datetime, datetime | None):
        return lambda handler: _iso(read(handler))
    return read


_READERS = tuple((name, _reader(name, field)) for name, field in HandlerData.model_fields.items())
"""One reader per ``HandlerData`` field, in the model's order: the model is the one definition."""


def handler_json(handler: PersistentHandler) -> dict[str, Any]:
    """A handler as the wire's ``HandlerData``: its keys, order and defaults are the model's.

    Filled from the model's fields rather than through ``HandlerData.model_dump``:
    the result envelope goes out exactly as it was stored (its keys and values
    untouched), and a listing of a thousand handlers skips a thousand validations.
    """
    return {name: read(handler) for name, read in _READERS}


def handler_response(handler: PersistentHandler, status_code: int = 200) -> Response:
    """The handler as a JSON response."""
    return json_response(handler_json(handler), status_code)


def handler_by_state(handler: PersistentHandler) -> Response:
    """The handler under the status code of its state (202 running, 500 failed...)."""
    return handler_response(handler, HANDLER_STATUS_CODE[handler.status])


def legacy_result(result: dict[str, Any] | None) -> Any:
    """A result envelope unwrapped to its value, as ``GET /results/{id}`` sends it."""
    if result is None:
        return None
    value = result.get("value") or {}
    if result.get("qualified_name") == "workflows.events.StopEvent":
        return value.get("result")
    return value


_PRIVATE_NODE_FIELDS = ("source_file", "source_line", "config_file", "config_value")


def redacted_graph(graph: dict[str, Any]) -> dict[str, Any]:
    """The graph without where resources live on the server or what their configs hold."""
    for node in graph.get("nodes", []):
        for key in _PRIVATE_NODE_FIELDS:
            if key in node:
                node[key] = None
    return graph


def stream_response(
    stream: EventStream, sse: bool, with_names: bool, heartbeat_interval: float | None = None
) -> Response:
    """The stream as SSE frames (``id:`` + ``data:``) or NDJSON lines.

    SSE streams send a heartbeat comment after ``heartbeat_interval`` quiet seconds.
    """

    def frame(event: StoredEvent) -> str:
        payload = event.payload if with_names else codec.without_qualified_name(event.payload)
        return f"id: {event.sequence}\ndata: {payload}\n\n" if sse else payload + "\n"

    async def frames() -> AsyncIterator[bytes]:
        # Everything written since the last read goes out in one chunk.
        try:
            async for item in with_heartbeats(stream, heartbeat_interval if sse else None):
                if isinstance(item, Heartbeat):
                    yield _HEARTBEAT_FRAME
                else:
                    yield "".join(frame(event) for event in item).encode()
        except StoreUnavailableError as exc:
            # The client reconnects from its last sequence once the store is back.
            logger.warning("ending the stream of run %s: %s", stream.run_id, exc)
        except Exception:
            logger.exception("ending the stream of run %s", stream.run_id)

    if sse:
        return StreamingResponse(frames(), media_type="text/event-stream", headers=_SSE_HEADERS)
    return StreamingResponse(frames(), media_type="application/x-ndjson")
