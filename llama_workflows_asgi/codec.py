"""Event envelopes in and out.

Incoming events name their class by ``type`` (class name) or
``qualified_name``; both are looked up only among the events a workflow
declares plus the framework's own, never imported. Outgoing events become the
envelope the official client parses: ``value``, ``qualified_name``, ``type``
and ``types``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from workflows.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    InternalDispatchEvent,
    StartEvent,
    StopEvent,
)

from ._event_values import FAST_VALUES
from ._json import DEFAULT_MAX_JSON_DEPTH, InvalidJSONError, dumps, load_object, loads
from .errors import BadEventError

FRAMEWORK_EVENTS: tuple[type[Event], ...] = (
    StartEvent,
    StopEvent,
    InputRequiredEvent,
    HumanResponseEvent,
)
"""Framework events every workflow accepts by name, declared or not."""

_ENVELOPE_KEYS = frozenset({"value", "data", "type", "types", "qualified_name", "__is_pydantic"})
_SERIALIZER_MARK = "__is_pydantic"
"""The key the engine's ``JsonSerializer`` puts beside ``value`` and ``qualified_name``."""


class SerializationError(BadEventError):
    """An event whose value cannot be turned into JSON (raised by :func:`envelope`)."""


def qualified_name(cls: type[Any]) -> str:
    """``module.ClassName`` of a class."""
    return f"{cls.__module__}.{cls.__name__}"


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


@dataclass(frozen=True)
class EncodedEvent:
    """An event turned into its wire envelope (compact JSON) plus stream flags."""

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

    The payload is ``dumps(envelope(event))``, with the part that depends only
    on the class encoded once per class: an event is encoded once per step
    transition, so this runs many times per run.
    """
    cls = type(event)
    tail, internal, terminal = _encoded_class(cls)
    return EncodedEvent('{"value":' + dumps(_value(event)) + tail, cls.__name__, internal, terminal)


def without_qualified_name(payload: str) -> str:
    """A stored envelope with its ``qualified_name`` set to null."""
    data = load_object(payload)
    data["qualified_name"] = None
    return dumps(data)


class EventRegistry:
    """The event classes a workflow accepts from outside, by name and qualified name."""

    def __init__(
        self,
        events: Iterable[type[Event]],
        start_class: type[StartEvent],
        *,
        max_depth: int = DEFAULT_MAX_JSON_DEPTH,
    ) -> None:
        self.start_class = start_class
        self.max_depth = max_depth  # for events given as JSON strings
        self._by_name: dict[str, type[Event]] = {}
        self._by_qualified_name: dict[str, type[Event]] = {}
        for cls in (*events, start_class, *FRAMEWORK_EVENTS):
            self._by_name.setdefault(cls.__name__, cls)
            self._by_qualified_name.setdefault(qualified_name(cls), cls)

    @property
    def names(self) -> list[str]:
        """Accepted class names, in declaration order."""
        return list(self._by_name)

    def resolve(self, type_name: str | None, qualified: str | None) -> type[Event]:
        """The declared class for a ``type`` or ``qualified_name``; raises ``BadEventError``."""
        if type_name is not None:
            found = self._by_name.get(type_name)
            if found is not None:
                return found
            if qualified is None:
                expected = ", ".join(self.names)
                raise BadEventError(f"Invalid event type: {type_name}. Expected one of {expected}")
        if qualified is not None:
            found = self._by_qualified_name.get(qualified)
            if found is not None:
                return found
            raise BadEventError(
                f"Event type {qualified} is not declared by this workflow. Register it with "
                "add_workflow(..., additional_events=[...])."
            )
        raise BadEventError("Invalid event: it must name its class with 'type' or 'qualified_name'")

    def decode(self, payload: Any) -> Event:
        """An event sent into a running workflow (``POST /events``).

        Accepted: the wire envelope (``type`` and/or ``qualified_name`` with
        ``value``, or the legacy ``data``) and the engine's serializer format
        (``__is_pydantic``, ``value``, ``qualified_name``), as an object or as a
        JSON string holding one.
        """
        data = _as_object(payload, self.max_depth)
        if not _looks_like_envelope(data, None):
            raise BadEventError(
                "Invalid event: expected an envelope with 'type' (or 'qualified_name') and 'value'"
            )
        cls = self.resolve(_optional_str(data, "type"), _optional_str(data, "qualified_name"))
        return _validate(cls, _value_of(data, self.max_depth))

    def decode_start(self, payload: Any) -> StartEvent:
        """A start event: an envelope (as ``decode`` takes) or its fields as a bare object."""
        data = _as_object(payload, self.max_depth)
        if not _looks_like_envelope(data, self.start_class):
            return _validate_start(self.start_class, data)
        type_name, qualified = _optional_str(data, "type"), _optional_str(data, "qualified_name")
        if type_name is None and qualified is None:
            cls: type[Event] = self.start_class
        else:
            cls = self.resolve(type_name, qualified)
        if issubclass(self.start_class, cls):
            # A base StartEvent (as the client sends by default) means this
            # workflow's own start class; validate the fields into it.
            cls = self.start_class
        if not issubclass(cls, self.start_class):
            raise BadEventError(
                f"Start event must be a {self.start_class.__name__}, got {cls.__name__}"
            )
        return _validate_start(cls, _value_of(data, self.max_depth))


def _as_object(payload: Any, max_depth: int) -> dict[str, Any]:
    if isinstance(payload, str):
        try:
            payload = loads(payload, max_depth=max_depth)
        except InvalidJSONError as exc:
            raise BadEventError(f"Invalid event: not valid JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise BadEventError("Invalid event: must be a JSON object or a JSON string holding one")
    return payload


def _looks_like_envelope(data: dict[str, Any], bare_class: type[Event] | None) -> bool:
    """Whether ``data`` wraps an event rather than being the event's fields.

    An object made only of envelope keys is an envelope, and so is one marked
    by the engine's serializer. An object with ``value`` and a class name is
    one too, other keys ignored (as the reference does), unless it is meant as
    a bare start event whose class declares every one of those keys.
    """
    keys = set(data)
    if data.get(_SERIALIZER_MARK) is True:
        return True
    if keys and keys <= _ENVELOPE_KEYS:
        return bool(keys & {"value", "data", "type", "qualified_name"})
    if "value" not in keys or not keys & {"type", "qualified_name"}:
        return False
    return bare_class is None or not keys <= set(bare_class.model_fields)


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BadEventError(f"Invalid event: '{key}' must be a string")


def _value_of(data: dict[str, Any], max_depth: int) -> dict[str, Any]:
    value = data.get("value", data.get("data"))
    if value is None:
        return {}
    if isinstance(value, str):
        value = _as_object(value, max_depth)
    if not isinstance(value, dict):
        raise BadEventError("Invalid event: 'value' must be a JSON object")
    return value


def _validate(cls: type[Event], value: dict[str, Any]) -> Event:
    try:
        return cls.model_validate(_lift_declared_fields(cls, value))
    except ValidationError as exc:
        raise BadEventError(f"Invalid {cls.__name__}: {describe_validation_error(exc)}") from exc
    except RecursionError:
        raise BadEventError(f"Invalid {cls.__name__}: nested too deeply") from None


def _lift_declared_fields(cls: type[Event], value: dict[str, Any]) -> dict[str, Any]:
    """Move ``_data`` entries that are declared fields of ``cls`` to the top level.

    A base ``StartEvent(topic=...)`` keeps ``topic`` as a dynamic attribute,
    serialized under ``_data``; validated into a subclass declaring ``topic``,
    it must fill the field.
    """
    dynamic = value.get("_data")
    if not isinstance(dynamic, dict):
        return value
    declared = {k: v for k, v in dynamic.items() if k in cls.model_fields and k not in value}
    if not declared:
        return value
    rest = {k: v for k, v in dynamic.items() if k not in declared}
    lifted = {**value, **declared}
    if rest:
        lifted["_data"] = rest
    else:
        del lifted["_data"]
    return lifted


def _validate_start(cls: type[Event], value: dict[str, Any]) -> StartEvent:
    event = _validate(cls, value)
    assert isinstance(event, StartEvent)  # callers pass StartEvent subclasses only
    return event


_CLASS_REPR = re.compile(r"<class '(?:[\w]+\.)*(\w+)'>")
_DOTTED_NAME = re.compile(r"\b(?:[a-z_]\w*\.)+([A-Z]\w*)\b")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


_NOT_ALLOWED = re.compile(r"Class ([\w.]+) is not in the serializer's allowed types")
_URL = re.compile(r"\S*https?://\S+")


def readable_error(exc: BaseException) -> str:
    """``exc``'s message for a person: no module paths, URLs or SQL, its root cause named.

    Serializers wrap the real reason ("Maximum serialization depth exceeded")
    in a generic message; the innermost cause is appended when it differs. A
    type a checkpoint may not restore is named with what to do about it.
    """
    root = exc
    for _ in range(16):  # a chain, not a cycle
        inner = root.__cause__ or root.__context__
        if inner is None:
            break
        root = inner
    for error in (exc, root):
        missing = _NOT_ALLOWED.search(str(error))
        if missing:
            name = missing.group(1).rsplit(".", 1)[-1]
            return (
                f"the checkpoint holds a {name}, a type this workflow does not declare; "
                "register it with add_workflow(..., additional_events=[...])"
            )
    if isinstance(exc, ValidationError):
        return describe_validation_error(exc)
    text = _clean(_message(exc))
    cause = _clean(_message(root)) if root is not exc else ""
    if cause and cause not in text:
        text = f"{text} ({cause})" if text else cause
    return (text or type(exc).__name__)[:1000]


def _message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # a driver error wrapped by SQLAlchemy
    text = str(orig if orig is not None else exc)
    return text.split("\n[SQL:", 1)[0].split("\n(Background on", 1)[0]


def _clean(text: str) -> str:
    text = _URL.sub("", text)
    text = _CLASS_REPR.sub(r"\1", text)
    text = _DOTTED_NAME.sub(r"\1", text)
    text = _ADDRESS.sub(">", text)
    # NUL and unpaired surrogates: no database column stores them.
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return " ".join(text.split()).strip(" :")


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line, readable summary of a pydantic validation error."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
