"""``_decoding``: the events a workflow accepts from outside, read from every envelope form."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import pytest
from workflows.events import Event, HumanResponseEvent, StartEvent, StopEvent

from llama_workflows_asgi._decoding import EventRegistry, qualified_name
from llama_workflows_asgi._json import dumps
from llama_workflows_asgi.codec import encode, envelope
from llama_workflows_asgi.errors import BadEventError

HERE = __name__


class Ping(Event):
    n: int


class Topic(StartEvent):
    topic: str
    count: int = 1


class Done(StopEvent):
    answer: int


@pytest.fixture
def registry() -> EventRegistry:
    """What a workflow ``Topic -> Ping -> Done`` accepts."""
    return EventRegistry([Topic, Ping, Done], Topic)


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


def test_events_given_as_json_strings_get_the_same_limits() -> None:
    registry = EventRegistry([], StartEvent, max_depth=5)
    with pytest.raises(BadEventError, match="limit of 5 levels"):
        registry.decode_start(dumps({"value": {"x": [[[[[1]]]]]}}))
    with pytest.raises(BadEventError, match="NaN"):
        registry.decode('{"type": "StartEvent", "value": "{\\"x\\": NaN}"}')
