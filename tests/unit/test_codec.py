"""``codec``: event envelopes out (``envelope``/``encode``/``dumps``) and in (``EventRegistry``)."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import pytest
from pydantic import BaseModel
from workflows.events import (
    Event,
    HumanResponseEvent,
    StartEvent,
    StepStateChanged,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowIdleEvent,
)

from llama_workflows_asgi._json import dumps
from llama_workflows_asgi.codec import (
    EncodedEvent,
    EventRegistry,
    SerializationError,
    encode,
    envelope,
    qualified_name,
    readable_error,
    without_qualified_name,
)
from llama_workflows_asgi.errors import BadEventError

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


class Topic(StartEvent):
    topic: str
    count: int = 1


class Done(StopEvent):
    answer: int


class Point(BaseModel):
    x: int


@pytest.fixture
def registry() -> EventRegistry:
    """What a workflow ``Topic -> Ping -> Done`` accepts."""
    return EventRegistry([Topic, Ping, Done], Topic)


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


# -- out: dumps ---------------------------------------------------------------------

# -- in: EventRegistry ----------------------------------------------------------------


def test_names_are_declared_events_then_framework_events_without_duplicates(
    registry: EventRegistry,
) -> None:
    assert registry.names == [
        "Topic",
        "Ping",
        "Done",
        "StartEvent",
        "StopEvent",
        "InputRequiredEvent",
        "HumanResponseEvent",
    ]


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "Ping", "value": {"n": 7}},
        {"type": "Ping", "value": {"n": 7}, "qualified_name": f"{HERE}.Ping", "types": None},
        {"qualified_name": f"{HERE}.Ping", "value": {"n": 7}},
        {"type": "Ping", "data": {"n": 7}},
        {"type": "Ping", "value": '{"n": 7}'},
        '{"type": "Ping", "value": {"n": 7}}',
        # An unknown ``type`` falls back to a declared ``qualified_name``.
        {"type": "Pong", "qualified_name": f"{HERE}.Ping", "value": {"n": 7}},
    ],
)
def test_decode_accepts_every_envelope_form(registry: EventRegistry, payload: Any) -> None:
    assert registry.decode(payload) == Ping(n=7)


def test_decode_accepts_framework_events_by_name(registry: EventRegistry) -> None:
    event = registry.decode({"type": "HumanResponseEvent", "value": {"_data": {"answer": "y"}}})
    assert type(event) is HumanResponseEvent
    assert event.get("answer") == "y"


def test_decode_round_trips_what_encode_wrote(registry: EventRegistry) -> None:
    assert registry.decode(encode(Ping(n=3, extra="x")).payload) == Ping(n=3, extra="x")


@pytest.mark.parametrize(
    "payload",
    [
        {"topic": "cats", "count": 2},
        {"_data": {"topic": "cats", "count": 2}},
        {"type": "Topic", "value": {"topic": "cats", "count": 2}},
        {"qualified_name": f"{HERE}.Topic", "value": {"topic": "cats", "count": 2}},
        {"value": {"topic": "cats", "count": 2}},
        {"type": "Topic", "data": {"topic": "cats", "count": 2}},
        {"type": "StartEvent", "value": {"topic": "cats", "count": 2}},
        {"type": "StartEvent", "value": {"_data": {"topic": "cats", "count": 2}}},
        {"type": "StartEvent", "value": '{"_data": {"topic": "cats", "count": 2}}'},
        '{"topic": "cats", "count": 2}',
        '{"type": "Topic", "value": {"topic": "cats", "count": 2}}',
        envelope(StartEvent(topic="cats", count=2)),
        encode(StartEvent(topic="cats", count=2)).payload,
    ],
)
def test_decode_start_accepts_every_form(registry: EventRegistry, payload: Any) -> None:
    event = registry.decode_start(payload)
    assert type(event) is Topic
    assert (event.topic, event.count) == ("cats", 2)


def test_base_start_event_fills_declared_fields_and_keeps_the_rest_dynamic(
    registry: EventRegistry,
) -> None:
    sent = envelope(StartEvent(topic="owls", mood="calm"))
    event = registry.decode_start(sent)
    assert isinstance(event, Topic)
    assert event.topic == "owls"
    assert event.get("mood") == "calm"
    assert envelope(event)["value"] == {"topic": "owls", "count": 1, "_data": {"mood": "calm"}}


def test_declared_field_given_twice_keeps_the_top_level_value(registry: EventRegistry) -> None:
    event = registry.decode_start({"topic": "top", "_data": {"topic": "dynamic"}})
    assert isinstance(event, Topic)
    assert event.topic == "top"


def test_decode_start_of_a_plain_start_event_workflow() -> None:
    plain = EventRegistry([], StartEvent)
    assert plain.decode_start({}) == StartEvent()
    assert plain.decode_start({"name": "Ada"}).get("name") == "Ada"
    assert plain.decode_start({"_data": {"name": "Ada"}}).get("name") == "Ada"


def fails(call: Any, payload: Any) -> str:
    with pytest.raises(BadEventError) as caught:
        call(payload)
    message = str(caught.value)
    assert "\n" not in message
    assert "errors.pydantic.dev" not in message
    return message


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"n": 1}, "expected an envelope with 'type'"),
        ({"type": "Nope", "value": {}}, "Invalid event type: Nope. Expected one of Topic, Ping"),
        ({"type": None, "value": {"n": 1}}, "must name its class with 'type' or 'qualified_name'"),
        ({"type": 3, "value": {}}, "'type' must be a string"),
        ({"qualified_name": ["x"], "value": {}}, "'qualified_name' must be a string"),
        ({"type": "Ping", "value": [1]}, "'value' must be a JSON object"),
        ({"type": "Ping", "value": {}}, "Invalid Ping: n: Field required"),
        ({"type": "Ping", "value": {"n": "many"}}, "Invalid Ping: n: Input should be a valid int"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"just a string"', "must be a JSON object"),
        (42, "must be a JSON object"),
        (None, "must be a JSON object"),
    ],
)
def test_decode_refuses_with_a_readable_message(
    registry: EventRegistry, payload: Any, expected: str
) -> None:
    assert expected in fails(registry.decode, payload)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, "Invalid Topic: topic: Field required"),
        ({"topic": "t", "count": "x"}, "Invalid Topic: count: Input should be a valid integer"),
        ({"type": "Done", "value": {"answer": 1}}, "Start event must be a Topic, got Done"),
        ({"type": "Ping", "value": {"n": 1}}, "Start event must be a Topic, got Ping"),
        ({"type": "StopEvent", "value": {}}, "Start event must be a Topic, got StopEvent"),
        ({"type": "Nope", "value": {}}, "Invalid event type: Nope"),
        ("[]", "must be a JSON object"),
    ],
)
def test_decode_start_refuses_with_a_readable_message(
    registry: EventRegistry, payload: Any, expected: str
) -> None:
    assert expected in fails(registry.decode_start, payload)


@pytest.fixture
def watched_imports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Imports of modules not loaded yet, recorded (and refused) while the test runs.

    ``importlib.import_module`` fails the test outright; every other import path
    (``import``, ``__import__``, a ``from importlib import import_module`` bound
    elsewhere) reaches ``_bootstrap._find_and_load``, which records the name.
    """
    attempted: list[str] = []
    find_and_load = importlib._bootstrap._find_and_load  # type: ignore[attr-defined]

    def no_import_module(name: str, package: str | None = None) -> Any:
        pytest.fail(f"the codec called importlib.import_module({name!r})")

    def recording(name: str, import_: Any) -> Any:
        attempted.append(name)
        return find_and_load(name, import_)

    monkeypatch.setattr(importlib, "import_module", no_import_module)
    monkeypatch.setattr(importlib._bootstrap, "_find_and_load", recording)  # type: ignore[attr-defined]
    return attempted


@pytest.mark.parametrize(
    "qualified",
    [
        "made_up_evil_module_3f9a.Payload",
        "made_up_evil_module_3f9a.sub.Payload",
        "this.Zen",  # a real stdlib module with a side effect on import
        "os.system",
        "tests.support.workflows.AnswerEvent",  # a real Event class, but not declared
    ],
)
def test_undeclared_qualified_names_are_never_imported(
    registry: EventRegistry, qualified: str, watched_imports: list[str]
) -> None:
    module = qualified.rpartition(".")[0]
    was_loaded = module in sys.modules
    payload = {"qualified_name": qualified, "value": {}}

    assert "is not declared by this workflow" in fails(registry.decode, payload)
    assert "is not declared by this workflow" in fails(registry.decode_start, payload)
    assert f"{qualified} is not declared" in fails(registry.decode, json.dumps(payload))
    assert (module in sys.modules) == was_loaded
    assert not [name for name in watched_imports if name.startswith(module.partition(".")[0])]


def test_declared_qualified_names_resolve_without_imports(
    registry: EventRegistry, watched_imports: list[str]
) -> None:
    assert registry.decode({"qualified_name": qualified_name(Ping), "value": {"n": 1}}) == Ping(n=1)
    assert registry.decode({"qualified_name": "workflows.events.StopEvent"}) == StopEvent()


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


def test_events_given_as_json_strings_get_the_same_limits() -> None:
    registry = EventRegistry([], StartEvent, max_depth=5)
    with pytest.raises(BadEventError, match="limit of 5 levels"):
        registry.decode_start(dumps({"value": {"x": [[[[[1]]]]]}}))
    with pytest.raises(BadEventError, match="NaN"):
        registry.decode('{"type": "StartEvent", "value": "{\\"x\\": NaN}"}')


def test_readable_error_drops_module_paths_and_names_the_root_cause() -> None:
    try:
        try:
            raise ValueError("Maximum serialization depth exceeded")
        except ValueError as inner:
            message = "Failed to serialize value: <class 'workflows.events.StartEvent'>: "
            raise ValueError(message) from inner
    except ValueError as exc:
        text = readable_error(exc)
    assert text == "Failed to serialize value: StartEvent (Maximum serialization depth exceeded)"
    assert readable_error(TypeError("bad tests.support.crash_app.Opaque\x00")) == "bad Opaque"
