"""``codec``, property-based: every accepted shape decodes to an equal event, and every
event is stored as the JSON of its envelope.

Events of declared types, with fields of several kinds, are generated, encoded in
every shape the framework and the reference server accept (the wire envelope,
``type`` or ``qualified_name`` alone, the legacy ``data``, the engine's
``JsonSerializer`` format, bare fields for start events; each as an object and as a
JSON string) and decoded back. Events of any value are encoded and compared with
their envelope.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from workflows.context.serializers import JsonSerializer
from workflows.events import Event, HumanResponseEvent, StartEvent, StopEvent

from llama_workflows_asgi.codec import (
    EventRegistry,
    SerializationError,
    dumps,
    encode,
    envelope,
    qualified_name,
    readable_error,
)
from llama_workflows_asgi.errors import BadEventError
from tests.support.workflows import nested_list

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None)


class Point(BaseModel):
    x: int
    y: float


class Rich(Event):
    text: str
    count: int
    ratio: float
    flag: bool
    tags: list[str]
    scores: dict[str, int]
    point: Point
    note: str | None = None


class Reply(HumanResponseEvent):
    answer: str


class Order(StartEvent):
    item: str
    quantity: int = 1
    rush: bool = False
    extras: list[str] = []


class Receipt(StopEvent):
    total: float


REGISTRY = EventRegistry([Order, Rich, Reply, Receipt], Order)
PLAIN = EventRegistry([Rich], StartEvent)
SERIALIZER = JsonSerializer()

texts = st.text(max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
# Names of dynamic start-event attributes; envelope keys are left out, since an
# object made only of them is an envelope by definition.
attribute_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda name: name not in {"value", "data", "type", "types", "qualified_name"}
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)

rich_events = st.builds(
    Rich,
    text=texts,
    count=st.integers(),
    ratio=finite,
    flag=st.booleans(),
    tags=st.lists(texts, max_size=4),
    scores=st.dictionaries(texts, st.integers(), max_size=4),
    point=st.builds(Point, x=st.integers(), y=finite),
    note=st.none() | texts,
)
sent_events: st.SearchStrategy[Event] = st.one_of(
    rich_events, st.builds(Reply, answer=texts), st.builds(Receipt, total=finite)
)
orders = st.builds(
    Order,
    item=texts,
    quantity=st.integers(),
    rush=st.booleans(),
    extras=st.lists(texts, max_size=3),
)
plain_starts = st.dictionaries(attribute_names, json_values, max_size=4).map(
    lambda fields: StartEvent(**fields)
)

Encoder = Callable[[Event], Any]


def _wire(event: Event) -> dict[str, Any]:
    return envelope(event)


def _by_type(event: Event) -> dict[str, Any]:
    return {"type": type(event).__name__, "value": event.model_dump(mode="json")}


def _by_qualified_name(event: Event) -> dict[str, Any]:
    return {"qualified_name": qualified_name(type(event)), "value": event.model_dump(mode="json")}


def _client(event: Event) -> dict[str, Any]:
    # What WorkflowClient sends: the class name, qualified_name null.
    value = event.model_dump(mode="json")
    return {"value": value, "type": type(event).__name__, "qualified_name": None}


def _legacy_data(event: Event) -> dict[str, Any]:
    return {"type": type(event).__name__, "data": event.model_dump(mode="json")}


def _serializer(event: Event) -> dict[str, Any]:
    encoded: dict[str, Any] = SERIALIZER.serialize_value(event)
    return encoded


def _with_extra_keys(event: Event) -> dict[str, Any]:
    # The reference ignores keys an envelope does not know.
    return {**_wire(event), "sent_by": "test"}


ENVELOPES: dict[str, Encoder] = {
    "wire": _wire,
    "type": _by_type,
    "qualified_name": _by_qualified_name,
    "client": _client,
    "legacy data": _legacy_data,
    "serializer": _serializer,
    "extra keys": _with_extra_keys,
}


def _as_text(encode: Encoder) -> Encoder:
    return lambda event: json.dumps(encode(event))


SHAPES: dict[str, Encoder] = {
    **ENVELOPES,
    **{f"{name} as JSON text": _as_text(encode) for name, encode in ENVELOPES.items()},
}
START_SHAPES: dict[str, Encoder] = {
    **SHAPES,
    "bare fields": lambda event: event.model_dump(mode="json"),
    "bare fields as JSON text": lambda event: json.dumps(event.model_dump(mode="json")),
}


@pytest.mark.parametrize("shape", list(SHAPES))
@SETTINGS
@given(event=sent_events)
def test_sent_events_decode_to_equal_events_in_every_shape(shape: str, event: Event) -> None:
    decoded = REGISTRY.decode(SHAPES[shape](event))
    assert type(decoded) is type(event)
    assert decoded == event


@pytest.mark.parametrize("shape", list(START_SHAPES))
@SETTINGS
@given(event=orders)
def test_start_events_decode_to_equal_events_in_every_shape(shape: str, event: Order) -> None:
    decoded = REGISTRY.decode_start(START_SHAPES[shape](event))
    assert type(decoded) is Order
    assert decoded == event


@pytest.mark.parametrize("shape", list(START_SHAPES))
@SETTINGS
@given(event=plain_starts)
def test_base_start_events_keep_their_dynamic_fields(shape: str, event: StartEvent) -> None:
    decoded = PLAIN.decode_start(START_SHAPES[shape](event))
    assert type(decoded) is StartEvent
    assert decoded.model_dump(mode="json") == event.model_dump(mode="json")


@pytest.mark.parametrize("shape", list(SHAPES))
@SETTINGS
@given(event=sent_events)
def test_a_non_start_event_is_never_a_start_event(shape: str, event: Event) -> None:
    with pytest.raises(BadEventError, match="Start event must be"):
        REGISTRY.decode_start(SHAPES[shape](event))


@pytest.mark.parametrize("shape", ["serializer", "serializer as JSON text", "qualified_name"])
def test_a_framework_stop_event_is_not_a_start_event(shape: str) -> None:
    with pytest.raises(BadEventError, match="Start event must be"):
        PLAIN.decode_start(SHAPES[shape](StopEvent(result="x")))


def test_the_serializer_format_of_an_undeclared_class_is_refused_without_import() -> None:
    payload = {"__is_pydantic": True, "value": {}, "qualified_name": "os.system"}
    with pytest.raises(BadEventError, match="not declared"):
        REGISTRY.decode(payload)


class Anything(Event):
    value: Any = None


def cycle() -> list[Any]:
    """A list that holds itself."""
    value: list[Any] = []
    value.append(value)
    return value


# Any JSON-like value, floats and text unrestricted (NaN, infinities, lone surrogates).
any_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@SETTINGS
@given(event=st.one_of(sent_events, orders, plain_starts, st.builds(Anything, value=any_values)))
def test_the_stored_payload_is_the_envelope_as_json(event: Event) -> None:
    try:
        expected = dumps(envelope(event))
    except SerializationError:
        with pytest.raises(SerializationError):
            encode(event)
        return
    payload = encode(event).payload
    assert json.loads(payload) == json.loads(expected)
    assert not {"\n", "\u2028", "\u2029"} & set(payload)  # one line, as every stored payload


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("\ud800", '"\ud800"'),  # pydantic's writer refuses it; the long way keeps it as is
        ("a\u2028b", '"a\\u2028b"'),  # one line, as every stored payload
        ("é", '"é"'),
        (1e-7, "1e-7"),  # the same number; Python would write 1e-07
        (float("nan"), "null"),
    ],
)
def test_values_pydantic_writes_and_those_it_refuses(value: Any, text: str) -> None:
    assert encode(Anything(value=value)).payload.startswith('{"value":{"value":' + text + "}")


@pytest.mark.parametrize("value", [object(), nested_list(300), cycle()])
def test_an_event_no_writer_can_serialize_fails_in_the_long_ways_words(value: Any) -> None:
    with pytest.raises(SerializationError) as refused:
        encode(Anything(value=value))
    with pytest.raises(SerializationError) as long_way:
        envelope(Anything(value=value))
    assert str(refused.value) == str(long_way.value)
    # Not chained to pydantic's writer's own error, whose text would join the run's.
    assert readable_error(refused.value.__cause__) == readable_error(long_way.value.__cause__)
    assert "Error serializing to JSON" not in readable_error(refused.value.__cause__)
