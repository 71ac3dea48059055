"""How a stored handler result reads back: a StopEvent, of the workflow's own class if served.

A store keeps a result as its wire envelope and never imports anything to read
it back: the classes it may rebuild are the ones the run service registered
(``AbstractWorkflowStore.result_classes``). A result read back is shown exactly
as it was stored, without dumping it again.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from workflows.events import StopEvent

from .. import codec

RESULT_CLASSES = "result_classes"
"""Validation context key: StopEvent classes by qualified name, to rebuild results with."""

_WIRE_KEYS = frozenset({"value", "qualified_name", "type", "types"})


def _is_envelope(data: Any) -> bool:
    if not isinstance(data, dict) or "value" not in data or not set(data) <= _WIRE_KEYS:
        return False
    return isinstance(data["value"], dict) and bool({"type", "qualified_name"} & set(data))


def result_event(data: Any, classes: Mapping[str, type[StopEvent]] | None) -> StopEvent | None:
    """A handler result as a StopEvent (see ``PersistentHandler``); never imports anything."""
    if data is None or isinstance(data, StopEvent):
        return data
    marked = isinstance(data, dict) and data.get("__is_pydantic") is True
    if not (marked or _is_envelope(data)):
        return StopEvent(result=data)
    value = data.get("value") if isinstance(data.get("value"), dict) else {}
    cls = _result_class(data, classes or {})
    event: StopEvent | None = None
    if cls is not None:
        with contextlib.suppress(ValidationError):
            event = cls.model_validate(value)
    if event is None:
        # A class this process does not serve: its fields, as a plain result.
        event = StopEvent(result=value)
    if _is_envelope(data):
        _remember_envelope(event, data)
    return event


_STORED_ENVELOPES: dict[int, dict[str, Any]] = {}
"""Stored envelopes of results read back, by ``id`` of the event read.

A result is shown exactly as it was stored (a class this process does not
serve keeps its own name), without dumping it again; an entry lives as long as
its event.
"""


def _remember_envelope(event: StopEvent, stored: dict[str, Any]) -> None:
    _STORED_ENVELOPES[id(event)] = stored
    weakref.finalize(event, _STORED_ENVELOPES.pop, id(event), None)


def _result_class(
    data: dict[str, Any], classes: Mapping[str, type[StopEvent]]
) -> type[StopEvent] | None:
    name = data.get("qualified_name")
    if name == codec.qualified_name(StopEvent) or (not name and data.get("type") == "StopEvent"):
        return StopEvent
    found = classes.get(name) if isinstance(name, str) else None
    if found is None and isinstance(data.get("type"), str) and not name:
        found = next((c for c in classes.values() if c.__name__ == data["type"]), None)
    return found


def result_envelope(result: StopEvent) -> dict[str, Any]:
    """``result`` as its wire envelope: as it was stored when it was read back, else dumped."""
    stored = _STORED_ENVELOPES.get(id(result))
    return codec.envelope(result) if stored is None else stored
