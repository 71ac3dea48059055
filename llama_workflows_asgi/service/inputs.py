"""What a start or a send accepts: handler ids, idempotency keys, events that survive a checkpoint.

The checks that need no store: a caller's raw input is refused here with a
``BadRequestError`` or ``BadEventError`` before any room writes anything.
``starting.py`` and ``inbox.py`` call them; the HTTP edge checks handler ids
in paths with :func:`check_handler_id`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
from typing import Any

from pydantic import ValidationError
from workflows.context.serializers import JsonSerializer
from workflows.events import Event, StartEvent

from .. import _json, codec
from ..errors import BadEventError, BadRequestError
from ..registry import RegisteredWorkflow

_ID_ALPHABET = string.ascii_letters + string.digits
_ID_SPACE = len(_ID_ALPHABET) ** 10
_HANDLER_ID = re.compile(r"[A-Za-z0-9._~:@-]{1,255}")


def new_id() -> str:
    """A 10-character random id from ``[A-Za-z0-9]``, like the reference server's."""
    number = secrets.randbelow(_ID_SPACE)  # one draw instead of one per character
    symbols = []
    for _ in range(10):
        number, digit = divmod(number, 62)
        symbols.append(_ID_ALPHABET[digit])
    return "".join(symbols)


def check_handler_id(handler_id: str) -> str:
    """``handler_id`` if a URL path segment carries it unescaped; else ``BadRequestError``.

    That is 1 to 255 RFC 3986 unreserved characters, ``:`` and ``@``, and not
    ``.`` or ``..`` (which a URL path resolves away).
    """
    if not _HANDLER_ID.fullmatch(handler_id) or handler_id in (".", ".."):
        raise BadRequestError(
            "Invalid handler_id: use 1 to 255 letters, digits and '-._~:@' (not '.' or '..' alone)"
        )
    return handler_id


def scoped_key(principal: str | None, key: str) -> str:
    """The stored form of an idempotency key: one caller's key never matches another's."""
    raw = _json.dumps([principal, key]).encode()
    return hashlib.sha256(raw).hexdigest()


def stored_key(principal: str | None, key: str | None) -> str | None:
    """The stored form of a caller's idempotency key (``None``: none); refuses an empty key."""
    if key is None:
        return None
    if not key.strip():
        raise BadRequestError("Invalid Idempotency-Key: it must not be empty")
    return scoped_key(principal, key)


def storable_envelope(
    entry: RegisteredWorkflow, event: Event, serializer: Any, *, start: bool
) -> dict[str, Any]:
    """``event``'s envelope, once it is known to checkpoint and decode back.

    Raises ``BadEventError`` otherwise: an input accepted and then refused
    by the serializer would fail its run (or, stored as something else,
    be silently replaced).
    """
    envelope = codec.envelope(event)
    payload = _json.dumps(envelope)
    try:
        payload.encode("utf-8")
        # Decoded as it will be when resumed or delivered: our own JSON,
        # so without the input limits (the envelope nests a little deeper).
        back = (entry.events.decode_start if start else entry.events.decode)(json.loads(payload))
    except (UnicodeEncodeError, BadEventError) as exc:
        raise BadEventError(f"Invalid event: it does not decode back ({exc})") from exc
    if codec.envelope(back) != envelope:
        raise BadEventError("Invalid event: its value changes when it is decoded again")
    if type(serializer) is JsonSerializer:
        return envelope  # it dumps an event exactly as envelope() just did
    try:
        serializer.serialize(event)
    except Exception as exc:
        reason = codec.readable_error(exc)
        raise BadEventError(f"Invalid event: it cannot be checkpointed ({reason})") from exc
    return envelope


def start_event_for(entry: RegisteredWorkflow, given: StartEvent | None) -> StartEvent:
    """The start event of a new run: ``given``, converted to the workflow's start class."""
    cls = entry.workflow.start_event_class
    if given is None:
        try:
            return cls()
        except ValidationError as exc:
            message = codec.describe_validation_error(exc)
            raise BadEventError(f"Invalid {cls.__name__}: {message}") from exc
    if isinstance(given, cls):
        return given
    # A base StartEvent (or another class) from host code: validated into the
    # start class exactly as the same event sent over HTTP would be.
    return entry.events.decode_start(codec.envelope(given))
