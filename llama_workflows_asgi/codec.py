"""Event envelopes out, and the one name for the codec's parts.

Outgoing events become the envelope the official client parses: ``value``,
``qualified_name``, ``type`` and ``types`` (:func:`envelope`, and :func:`encode`
for the stored and streamed form). Events coming in are read by
:class:`EventRegistry` (``_decoding.py``); the readable text of an error is
``_error_text.py``'s. Both are named here too, so ``codec.X`` is the one import.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from workflows.events import Event, InternalDispatchEvent, StopEvent

from ._decoding import FRAMEWORK_EVENTS, EventRegistry, qualified_name
from ._error_text import describe_validation_error, readable_error
from ._event_values import FAST_TEXTS, FAST_VALUES
from ._json import dumps, load_object, one_line
from .errors import BadEventError

__all__ = [  # decoding and error text are defined in ._decoding and ._error_text
    "FRAMEWORK_EVENTS",
    "EncodedEvent",
    "EventRegistry",
    "SerializationError",
    "describe_validation_error",
    "dumps",
    "encode",
    "envelope",
    "event_ancestors",
    "is_internal",
    "is_terminal",
    "qualified_name",
    "readable_error",
    "without_qualified_name",
]


class SerializationError(BadEventError):
    """An event whose value cannot be turned into JSON (raised by :func:`envelope`)."""


@functools.lru_cache(maxsize=1024)
def event_ancestors(cls: type[Event]) -> tuple[str, ...]:
    """Names of the Event subclasses above ``cls`` in its MRO, nearest first."""
    names: list[str] = []
    for base in cls.__mro__[1:]:
        if base is Event:
            break
        if isinstance(base, type) and issubclass(base, Event):
            names.append(base.__name__)
    return tuple(names)


def is_internal(cls: type[Event]) -> bool:
    """Whether streams hide this event unless internal events are requested."""
    return issubclass(cls, InternalDispatchEvent)


def is_terminal(cls: type[Event]) -> bool:
    """Whether this event ends a run's stream (a StopEvent of any kind)."""
    return issubclass(cls, StopEvent)


class EncodedEvent(NamedTuple):
    """An event turned into its wire envelope (compact JSON) plus stream flags.

    A named tuple: one is made per event a run streams, and a tuple is made
    in a fraction of a frozen dataclass's time.
    """

    payload: str
    event_type: str
    internal: bool
    terminal: bool


def envelope(event: Event, *, include_qualified_name: bool = True) -> dict[str, Any]:
    """The wire envelope of ``event`` as a dict.

    Raises :class:`SerializationError` if the event's value cannot be turned
    into JSON (an object no serializer knows, a cycle, nesting too deep).
    """
    cls = type(event)
    return {
        "value": _value(event),
        "qualified_name": qualified_name(cls) if include_qualified_name else None,
        "type": cls.__name__,
        "types": list(event_ancestors(cls)) or None,
    }


def _value(event: Event) -> Any:
    fast = FAST_VALUES.get(type(event))
    value = None if fast is None else fast(event)
    if value is not None:
        return value
    try:
        return event.model_dump(mode="json")
    except Exception as exc:
        name = type(event).__name__
        raise SerializationError(f"The {name} cannot be serialized: {readable_error(exc)}") from exc


@functools.lru_cache(maxsize=1024)
def _encoded_class(cls: type[Event]) -> tuple[str, bool, bool]:
    """What every envelope of ``cls`` shares: the JSON after its value, and its stream flags."""
    names = dumps({"qualified_name": qualified_name(cls), "type": cls.__name__, "types": None})
    ancestors = event_ancestors(cls)
    if ancestors:
        names = names[: -len("null}")] + dumps(list(ancestors)) + "}"
    return "," + names[1:], is_internal(cls), is_terminal(cls)


def encode(event: Event) -> EncodedEvent:
    """The stored and streamed form of ``event``; raises :class:`SerializationError`.

    The payload is the JSON of ``envelope(event)``, with the part that depends
    only on the class encoded once per class: an event is encoded once per step
    transition, so this runs many times per run.
    """
    cls = type(event)
    tail, internal, terminal = _encoded_class(cls)
    fast = FAST_TEXTS.get(cls)
    text = None if fast is None else fast(event)
    if text is None:
        text = _value_text(event)
    return EncodedEvent('{"value":' + text + tail, cls.__name__, internal, terminal)


def _value_text(event: Event) -> str:
    """The JSON text of ``_value(event)``, written by pydantic in one pass.

    The same value as ``dumps(_value(event))`` (pydantic's JSON mode either
    way), in a fifth to a third less time: no Python dict and no encoder in
    between. Only the spelling of a few numbers differs (``1e-7``, where
    Python writes ``1e-07``), and a model configured to write infinities as
    strings (``ser_json_inf_nan="strings"``) gets its strings, where the long
    way wrote a bare ``Infinity``, which is not JSON. What pydantic's writer
    refuses (a lone surrogate, a value it cannot serialize) goes the long way,
    which keeps what that way did with it, errors and their text included
    (a value that can be read only once, a generator, was read by the first
    attempt).
    """
    try:
        return one_line(event.model_dump_json())
    except Exception:  # the long way below says what is wrong, in its own words
        pass
    # Outside the handler: the long way's error is not chained to this one.
    return dumps(_value(event))


def without_qualified_name(payload: str) -> str:
    """A stored envelope with its ``qualified_name`` set to null."""
    data = load_object(payload)
    data["qualified_name"] = None
    return dumps(data)
