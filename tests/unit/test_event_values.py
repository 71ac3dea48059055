"""``_event_values``: the engine's ``StepStateChanged`` valued exactly as pydantic values it."""

from __future__ import annotations

from typing import Any

import pytest
from workflows.events import Event, StepState, StepStateChanged

from llama_workflows_asgi import codec
from llama_workflows_asgi._event_values import FAST_VALUES


class Tagged(str):
    """A string of another type."""


def changed(**fields: Any) -> StepStateChanged:
    base: dict[str, Any] = {
        "name": "first",
        "step_state": StepState.RUNNING,
        "worker_id": "0",
        "input_event_name": "<class 'workflows.events.StartEvent'>",
    }
    return StepStateChanged(**{**base, **fields})


def pydantic_payload(event: Event) -> str:
    """The stored envelope of ``event`` with its value built by pydantic, never directly."""
    return codec.dumps({**codec.envelope(event), "value": event.model_dump(mode="json")})


@pytest.mark.parametrize(
    "event",
    [
        changed(),
        changed(output_event_name="<class 'benchmarks.workloads.Link'>"),
        changed(step_state=StepState.NOT_RUNNING, name="ünïcode \u2028", worker_id="12"),
        *(changed(step_state=state) for state in StepState),
    ],
)
def test_a_plain_step_state_change_is_built_directly_and_equals_pydantics(
    event: StepStateChanged,
) -> None:
    fast = FAST_VALUES[StepStateChanged](event)
    assert fast is not None
    assert fast == event.model_dump(mode="json")
    assert list(fast) == list(event.model_dump(mode="json"))  # same key order, same JSON
    assert codec.encode(event).payload == pydantic_payload(event)


def test_anything_unusual_is_left_to_pydantic() -> None:
    extra = changed(note="kept in _data")
    odd = changed()
    odd.worker_id = Tagged("7")  # assignment is not validated: left to pydantic
    for event in (extra, odd):
        assert FAST_VALUES[StepStateChanged](event) is None
        assert codec.encode(event).payload == pydantic_payload(event)
    assert "_data" in codec.envelope(extra)["value"]


def test_only_that_exact_class_is_built_directly() -> None:
    class Derived(StepStateChanged):
        extra_field: str = "x"

    assert Derived not in FAST_VALUES
    assert Event not in FAST_VALUES
    event = Derived(name="a", step_state=StepState.RUNNING, worker_id="0", input_event_name="x")
    assert codec.envelope(event)["value"]["extra_field"] == "x"


def test_the_engine_event_has_the_fields_it_is_built_from() -> None:
    # An engine that changes them turns the direct build off (see _event_values).
    assert StepStateChanged in FAST_VALUES
