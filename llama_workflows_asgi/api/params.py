"""Parsing what a request carries: query flags, stream cursors, listing cursors, bodies.

Each function turns raw text or JSON into the value the service takes, or
raises ``BadRequestError`` (a 400 with its message) for anything else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any, Literal, cast, get_args

from .. import _json
from ..errors import BadRequestError
from ..registry import RegisteredWorkflow
from ..service import HandlerCursor, Status
from ..service.inputs import check_handler_id

STATUSES: tuple[str, ...] = get_args(Status)
"""The handler statuses a listing can filter on, from the one ``Status`` literal."""

MAX_SEQUENCE = 2**63 - 1
"""Sequences are 64-bit integers in the database: a cursor past this cannot exist."""
_INTEGER = re.compile(r"\s*(-?[0-9]+)\s*", re.ASCII)


def flag(value: str | None, name: str, default: bool) -> bool:
    """A boolean query parameter: ``true``/``1``, ``false``/``0`` (any case), or absent."""
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequestError(f"Invalid {name}: {value!r} (expected true or false)")


def sequence(text: str) -> int | None:
    """``text`` as a sequence cursor (ASCII digits, -1 or more, within 64 bits), else ``None``."""
    match = _INTEGER.fullmatch(text)
    if match is None:
        return None
    value = int(match.group(1))
    return value if -1 <= value <= MAX_SEQUENCE else None


def stream_position(
    after_sequence: str | None, last_event_id: str | None, sse: bool
) -> int | Literal["now"]:
    """Where a stream starts: an SSE client's ``Last-Event-ID``, else ``after_sequence``.

    A ``Last-Event-ID`` that is not an integer is ignored (browsers send what
    the server sent); a negative one beyond ``-1`` restarts from the beginning.
    """
    if sse and last_event_id is not None and _INTEGER.fullmatch(last_event_id):
        position = sequence(last_event_id)
        if position is None and not last_event_id.strip().startswith("-"):
            raise BadRequestError(f"Invalid Last-Event-ID: {last_event_id.strip()[:40]!r}")
        return -1 if position is None else position
    if after_sequence is None or after_sequence == "now":
        return "now"
    position = sequence(after_sequence)
    if position is None:
        raise BadRequestError(
            f"Invalid after_sequence: {after_sequence[:40]!r} "
            f"(expected now or an integer from -1 to {MAX_SEQUENCE})"
        )
    return position


def status_filter(values: list[str] | None) -> list[Status] | None:
    """Repeated ``status`` parameters; empty ones are dropped, ``None`` when none is left."""
    given = [v for v in values or [] if v]
    unknown = [v for v in given if v not in STATUSES]
    if unknown:
        raise BadRequestError(
            f"Invalid status: {unknown[0]!r} (expected running, completed, failed or cancelled)"
        )
    return cast("list[Status]", given) or None


def name_filter(values: list[str] | None) -> list[str] | None:
    """Repeated name or id parameters; empty ones are dropped, ``None`` when none is left."""
    return [v for v in values or [] if v] or None


def encode_cursor(position: HandlerCursor) -> str:
    """An opaque, URL-safe token for a listing position."""
    raw = _json.dumps([position.started_at.isoformat(), position.handler_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> HandlerCursor:
    """Parse a token made by :func:`encode_cursor`; raises ``BadRequestError`` otherwise."""
    try:
        padded = token + "=" * (-len(token) % 4)
        started_at, handler_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        moment = datetime.fromisoformat(started_at)
        if moment.tzinfo is None or not isinstance(handler_id, str):
            raise ValueError(token)
        # A moment near the ends of the calendar may not exist in UTC.
        return HandlerCursor(moment.astimezone(timezone.utc), handler_id)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise BadRequestError(f"Invalid cursor: {token[:80]!r}") from exc


def body_handler_id(handler_id: Any) -> str | None:
    """The ``handler_id`` a run request chooses, checked; ``None`` when absent."""
    if handler_id is None:
        return None
    if not isinstance(handler_id, str):
        raise BadRequestError("Invalid handler_id: it must be a string")
    return check_handler_id(handler_id)


def fingerprint(name: str, body: Any) -> str:
    """A digest of a run request, so a reused idempotency key with another body is refused."""
    return hashlib.sha256(_json.canonical([name, body]).encode()).hexdigest()


def json_object(body: Any) -> dict[str, Any]:
    """``body`` if it is a JSON object."""
    if not isinstance(body, dict):
        raise BadRequestError("Request body must be a JSON object")
    return body


def event_body(body: Any) -> tuple[Any, str | None]:
    """The event and the target step of a ``POST /events/{id}`` body."""
    fields = json_object(body)
    event, step = fields.get("event"), fields.get("step")
    if not event:
        raise BadRequestError("Event data is required")
    if step is not None and not isinstance(step, str):
        raise BadRequestError("Invalid step: it must be a string")
    return event, step


def start_event(entry: RegisteredWorkflow, body: dict[str, Any]) -> Any:
    """The start event a run request describes (``start_event``, else legacy ``kwargs``)."""
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


def context_field(value: Any) -> dict[str, Any] | None:
    """A run request's serialized ``context``: an object or the JSON text of one."""
    if isinstance(value, str) and value:
        # A context may come as the JSON text of one, as a start event may.
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise BadRequestError("Invalid context: not a JSON object") from None
    if value is None or value == "" or isinstance(value, dict):
        return value or None
    raise BadRequestError("Invalid context: it must be a JSON object")
