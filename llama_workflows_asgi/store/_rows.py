"""Conversions between the store's dataclasses and table rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflows.events import StopEvent

from .. import _json
from .base import RESULT_CLASSES, InboxEntry, PersistentHandler, StoredEvent


def dump_json(value: Mapping[str, Any] | None) -> str | None:
    """Compact JSON text for a JSON column (``None`` stays SQL NULL)."""
    if value is None:
        return None
    return _json.dumps(value)


def load_json(text: str | None) -> dict[str, Any] | None:
    """The object stored by :func:`dump_json`; raises ``ValueError`` for anything else."""
    if text is None:
        return None
    return _json.load_object(text)


def handler_values(handler: PersistentHandler) -> dict[str, Any]:
    """Column values for a handler row."""
    values = handler.model_dump(exclude={"ctx", "result", "start_event", "previous_owner_id"})
    values["ctx"] = dump_json(handler.ctx)
    values["result"] = dump_json(handler.result_envelope())
    values["start_event"] = dump_json(handler.start_event)
    return values


def handler_from_row(
    row: Mapping[Any, Any], result_classes: Mapping[str, type[StopEvent]] | None = None
) -> PersistentHandler:
    """A handler from a row; a missing ``ctx`` column (not loaded) reads as ``None``.

    The result is rebuilt as one of ``result_classes`` when it names one.
    """
    values = dict(row)
    values["ctx"] = load_json(values.get("ctx"))
    values["result"] = load_json(values["result"])
    values["start_event"] = load_json(values["start_event"])
    return PersistentHandler.model_validate(values, context={RESULT_CLASSES: result_classes or {}})


def event_values(run_id: str, event: StoredEvent) -> dict[str, Any]:
    """Column values for one event of ``run_id``'s log."""
    return {
        "run_id": run_id,
        "sequence": event.sequence,
        "event_type": event.event_type,
        "internal": event.internal,
        "terminal": event.terminal,
        "payload": event.payload,
        "created_at": event.created_at,
    }


def event_from_row(row: Mapping[Any, Any]) -> StoredEvent:
    """A stored event from an event row."""
    return StoredEvent(
        sequence=row["sequence"],
        payload=row["payload"],
        event_type=row["event_type"],
        internal=bool(row["internal"]),
        terminal=bool(row["terminal"]),
        created_at=row["created_at"],
    )


def inbox_from_row(row: Mapping[Any, Any]) -> InboxEntry:
    """An inbox entry from an inbox row."""
    return InboxEntry(
        id=row["id"],
        handler_id=row["handler_id"],
        run_id=row["run_id"],
        payload=row["payload"],
        step=row["step"],
        created_at=row["created_at"],
    )
