"""The JSON values of the engine's most frequent event, built without pydantic.

Every step execution streams two ``StepStateChanged`` events (running, then
not running), and each is encoded into the run's event log: through pydantic
(``model_dump(mode="json")`` with the engine's wrap serializer) that costs
about twice what the rest of its encoding does. Its fields are plain strings
and one enum, so the value is built from them directly, exactly as pydantic
would build it; anything unusual (a field the engine added, a value of another
type, extra data) is left to pydantic. ``tests/unit/test_event_values.py``
compares both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workflows.events import Event, StepState, StepStateChanged

_STEP_STATE_FIELDS = ("name", "step_state", "worker_id", "input_event_name", "output_event_name")


def _step_state_value(event: Event) -> dict[str, Any] | None:
    """``StepStateChanged.model_dump(mode="json")``, or ``None`` to let pydantic do it."""
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
    return {
        "name": fields["name"],
        "step_state": state.value,
        "worker_id": fields["worker_id"],
        "input_event_name": fields["input_event_name"],
        "output_event_name": output,
    }


def _fast_values() -> dict[type[Event], Callable[[Event], dict[str, Any] | None]]:
    # Only while the class has exactly the fields this knows: an engine that
    # adds one gets pydantic's encoding until this is taught about it.
    if tuple(StepStateChanged.model_fields) != _STEP_STATE_FIELDS:
        return {}
    return {StepStateChanged: _step_state_value}


FAST_VALUES = _fast_values()
"""Per event class (exactly that class, not subclasses), its value built directly."""
