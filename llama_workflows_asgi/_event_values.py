"""The JSON values of the engine's most frequent event, built without pydantic.

Every step execution streams two ``StepStateChanged`` events (running, then
not running), and each is encoded into the run's event log: through pydantic
(``model_dump(mode="json")`` with the engine's wrap serializer) that costs
about twice what the rest of its encoding does. Its fields are plain strings
and one enum, so the value is built from them directly, exactly as pydantic
would build it; anything unusual (a field the engine added, a value of another
type, extra data) is left to pydantic. Its JSON text, which every stored and
streamed event needs, is written out directly too (``FAST_TEXTS``), without a
dict or an encoder in between. ``tests/unit/test_event_values.py`` compares
both with pydantic's.
"""

from __future__ import annotations

from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from workflows.events import Event, StepState, StepStateChanged

from ._json import one_line

_string = encode_basestring  # a JSON string, non-ASCII kept: as ``_json.dumps`` writes one

_STEP_STATE_FIELDS = ("name", "step_state", "worker_id", "input_event_name", "output_event_name")


def _plain_fields(event: Event) -> dict[str, Any] | None:
    """A ``StepStateChanged``'s fields if pydantic would dump them as they are, else ``None``."""
    fields = event.__dict__
    state, output = fields["step_state"], fields["output_event_name"]
    private = event.__pydantic_private__
    if (
        type(state) is not StepState
        or type(state.value) is not str
        or type(fields["name"]) is not str
        or type(fields["worker_id"]) is not str
        or type(fields["input_event_name"]) is not str
        or (output is not None and type(output) is not str)
        or (private and private.get("_data"))
    ):
        return None
    return fields


def _step_state_value(event: Event) -> dict[str, Any] | None:
    """``StepStateChanged.model_dump(mode="json")``, or ``None`` to let pydantic do it."""
    fields = _plain_fields(event)
    if fields is None:
        return None
    return {
        "name": fields["name"],
        "step_state": fields["step_state"].value,
        "worker_id": fields["worker_id"],
        "input_event_name": fields["input_event_name"],
        "output_event_name": fields["output_event_name"],
    }


def _step_state_text(event: Event) -> str | None:
    """``dumps`` of :func:`_step_state_value`, written out directly (no dict, no encoder)."""
    fields = _plain_fields(event)
    if fields is None:
        return None
    output = fields["output_event_name"]
    return one_line(
        '{"name":'
        + _string(fields["name"])
        + ',"step_state":'
        + _string(fields["step_state"].value)
        + ',"worker_id":'
        + _string(fields["worker_id"])
        + ',"input_event_name":'
        + _string(fields["input_event_name"])
        + ',"output_event_name":'
        + ("null" if output is None else _string(output))
        + "}"
    )


def _fast_values() -> dict[type[Event], Callable[[Event], dict[str, Any] | None]]:
    # Only while the class has exactly the fields this knows: an engine that
    # adds one gets pydantic's encoding until this is taught about it.
    if tuple(StepStateChanged.model_fields) != _STEP_STATE_FIELDS:
        return {}
    return {StepStateChanged: _step_state_value}


FAST_VALUES = _fast_values()
"""Per event class (exactly that class, not subclasses), its value built directly."""

FAST_TEXTS: dict[type[Event], Callable[[Event], str | None]] = (
    {StepStateChanged: _step_state_text} if FAST_VALUES else {}
)
"""Per event class in :data:`FAST_VALUES`, its value's JSON text (as ``dumps`` writes it)."""
