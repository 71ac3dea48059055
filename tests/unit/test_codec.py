"""``codec``: event envelopes out (``envelope``/``encode``), and the names it gives its parts.

Decoding is tested in ``test_decoding.py``, readable error text in ``test_error_text.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel
from workflows.events import (
    Event,
    StartEvent,
    StepStateChanged,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowIdleEvent,
)

from llama_workflows_asgi import _decoding, _error_text, _json, codec
from llama_workflows_asgi._json import dumps
from llama_workflows_asgi.codec import (
    EncodedEvent,
    SerializationError,
    encode,
    envelope,
    without_qualified_name,
)

HERE = __name__


class Ping(Event):
    n: int


class A(Event):
    pass


class B(A):
    pass


class C(B):
    pass


class Tagged:
    """A non-Event mixin: never listed in ``types``."""


class TaggedPing(Tagged, Ping):
    pass


class Done(StopEvent):
    answer: int


class Point(BaseModel):
    x: int


# -- out: envelopes -------------------------------------------------------------------


def test_envelope_of_a_plain_event() -> None:
    assert envelope(Ping(n=1)) == {
        "value": {"n": 1},
        "qualified_name": f"{HERE}.Ping",
        "type": "Ping",
        "types": None,
    }
    assert list(envelope(Ping(n=1))) == ["value", "qualified_name", "type", "types"]


def test_envelope_without_qualified_name() -> None:
    assert envelope(Ping(n=1), include_qualified_name=False)["qualified_name"] is None


def test_dynamic_attributes_are_written_under_data() -> None:
    assert envelope(StartEvent(name="A"))["value"] == {"_data": {"name": "A"}}
    assert envelope(StartEvent())["value"] == {}
    assert envelope(Ping(n=1, extra="x"))["value"] == {"n": 1, "_data": {"extra": "x"}}


@pytest.mark.parametrize(
    ("event", "value"),
    [
        (StopEvent(result={"greeting": "Hello"}), {"result": {"greeting": "Hello"}}),
        (StopEvent(result="got Ada"), {"result": "got Ada"}),
        (StopEvent(), {}),
        (StopEvent(result=None, extra=2), {}),
        (StopEvent(result=Point(x=3)), {"result": {"x": 3}}),
    ],
)
def test_stop_event_result(event: StopEvent, value: dict[str, Any]) -> None:
    data = envelope(event)
    assert data["value"] == value
    assert (data["type"], data["types"]) == ("StopEvent", None)
    assert data["qualified_name"] == "workflows.events.StopEvent"


def test_a_result_that_cannot_be_serialized_is_an_error_never_a_placeholder() -> None:
    with pytest.raises(SerializationError) as raised:
        envelope(StopEvent(result=object()))
    assert str(raised.value) == (
        "The StopEvent cannot be serialized: Unable to serialize unknown type: object"
    )
    with pytest.raises(SerializationError):
        encode(StopEvent(result=object()))


def test_custom_stop_event_subclass() -> None:
    assert envelope(Done(answer=84)) == {
        "value": {"answer": 84},
        "qualified_name": f"{HERE}.Done",
        "type": "Done",
        "types": ["StopEvent"],
    }
    assert envelope(Done(answer=1, result="r"))["value"] == {"answer": 1, "result": "r"}


@pytest.mark.parametrize(
    ("event", "types"),
    [
        (A(), None),
        (B(), ["A"]),
        (C(), ["B", "A"]),
        (TaggedPing(n=1), ["Ping"]),
        (Done(answer=1), ["StopEvent"]),
        (WorkflowIdleEvent(), ["InternalDispatchEvent"]),
    ],
)
def test_types_lists_event_ancestors_nearest_first(event: Event, types: list[str] | None) -> None:
    assert envelope(event)["types"] == types


def test_encode_is_the_compact_envelope_with_stream_flags() -> None:
    encoded = encode(Ping(n=1))
    assert encoded == EncodedEvent(
        payload=f'{{"value":{{"n":1}},"qualified_name":"{HERE}.Ping","type":"Ping","types":null}}',
        event_type="Ping",
        internal=False,
        terminal=False,
    )


@pytest.mark.parametrize(
    ("event", "internal", "terminal"),
    [
        (Ping(n=1), False, False),
        (WorkflowIdleEvent(), True, False),
        (
            StepStateChanged(
                name="s", step_state="running", worker_id="w", input_event_name="Ping"
            ),
            True,
            False,
        ),
        (StopEvent(result=1), False, True),
        (Done(answer=1), False, True),
        (WorkflowCancelledEvent(), False, True),
        (WorkflowFailedEvent(step_name="s", exception=RuntimeError("x")), False, True),
    ],
)
def test_internal_and_terminal_flags(event: Event, internal: bool, terminal: bool) -> None:
    encoded = encode(event)
    assert (encoded.internal, encoded.terminal) == (internal, terminal)
    assert encoded.event_type == type(event).__name__


# -- stored envelopes ----------------------------------------------------------------


def test_without_qualified_name() -> None:
    stored = encode(Done(answer=1)).payload
    stripped = without_qualified_name(stored)
    assert json.loads(stripped) == {**json.loads(stored), "qualified_name": None}
    assert stripped == dumps(json.loads(stripped))  # still compact, key order kept
    assert list(json.loads(stripped)) == ["value", "qualified_name", "type", "types"]


def test_without_qualified_name_keeps_the_payload_one_line() -> None:
    stored = encode(StopEvent(result="a\u2028b")).payload
    stripped = without_qualified_name(stored)
    assert "\u2028" not in stripped
    assert json.loads(stripped)["value"] == {"result": "a\u2028b"}


def test_the_codec_names_its_decoding_and_error_text_too() -> None:
    assert codec.EventRegistry is _decoding.EventRegistry
    assert codec.FRAMEWORK_EVENTS is _decoding.FRAMEWORK_EVENTS
    assert codec.qualified_name is _decoding.qualified_name
    assert codec.readable_error is _error_text.readable_error
    assert codec.describe_validation_error is _error_text.describe_validation_error
    assert codec.dumps is _json.dumps
    assert all(hasattr(codec, name) for name in codec.__all__)
