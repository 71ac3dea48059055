"""``api.params``: the request parsing helpers, called directly."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from llama_workflows_asgi.api import params
from llama_workflows_asgi.api.wire import handler_json
from llama_workflows_asgi.errors import BadRequestError
from llama_workflows_asgi.models import HandlerData
from llama_workflows_asgi.registry import WorkflowRegistry
from llama_workflows_asgi.service import HandlerCursor
from llama_workflows_asgi.store.base import PersistentHandler
from tests.support.workflows import GreetWorkflow

MOMENT = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, True),
        ("", True),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("false", False),
        ("False", False),
        ("0", False),
    ],
)
def test_flag_reads_true_false_and_absent(value: str | None, expected: bool) -> None:
    assert params.flag(value, "sse", default=True) is expected
    if value in (None, ""):
        assert params.flag(value, "sse", default=False) is False


@pytest.mark.parametrize("value", ["yes", "2", "on", " true"])
def test_flag_refuses_anything_else_naming_the_parameter(value: str) -> None:
    with pytest.raises(BadRequestError, match=r"Invalid purge: .* \(expected true or false\)"):
        params.flag(value, "purge", default=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("-1", -1),
        (" 42 ", 42),
        (str(params.MAX_SEQUENCE), params.MAX_SEQUENCE),
        ("-2", None),
        (str(params.MAX_SEQUENCE + 1), None),
        ("1.5", None),
        ("\u0663", None),  # an Arabic-Indic digit: not ASCII
        ("", None),
    ],
)
def test_sequence_is_a_64_bit_integer_from_minus_one(text: str, expected: int | None) -> None:
    assert params.sequence(text) == expected


def test_stream_position_defaults_to_now_and_reads_after_sequence() -> None:
    assert params.stream_position(None, None, sse=True) == "now"
    assert params.stream_position("now", None, sse=True) == "now"
    assert params.stream_position("7", None, sse=False) == 7
    with pytest.raises(BadRequestError, match="Invalid after_sequence: 'soon'"):
        params.stream_position("soon", None, sse=True)
    with pytest.raises(BadRequestError, match="Invalid after_sequence: '-5'"):
        params.stream_position("-5", None, sse=True)


def test_last_event_id_wins_for_sse_only() -> None:
    assert params.stream_position("3", "9", sse=True) == 9
    assert params.stream_position("3", "9", sse=False) == 3
    # Not an integer: the browser echoes what it got, so it is ignored.
    assert params.stream_position("3", "abc", sse=True) == 3
    # Below -1: start from the beginning; beyond 64 bits: refused.
    assert params.stream_position(None, "-7", sse=True) == -1
    with pytest.raises(BadRequestError, match="Invalid Last-Event-ID"):
        params.stream_position(None, str(params.MAX_SEQUENCE + 1), sse=True)


def test_status_filter_drops_empties_and_refuses_unknown_statuses() -> None:
    assert params.STATUSES == ("running", "completed", "failed", "cancelled")
    assert params.status_filter(None) is None
    assert params.status_filter(["", ""]) is None
    assert params.status_filter(["failed", "", "running"]) == ["failed", "running"]
    with pytest.raises(BadRequestError, match="Invalid status: 'done'"):
        params.status_filter(["running", "done"])


def test_name_filter_drops_empties() -> None:
    assert params.name_filter(None) is None
    assert params.name_filter([""]) is None
    assert params.name_filter(["a", "", "b"]) == ["a", "b"]


def test_cursor_token_round_trips_to_the_same_instant() -> None:
    position = HandlerCursor(MOMENT, "h-1")
    token = params.encode_cursor(position)
    assert token.isascii()
    assert not set(token) & set("=/+")
    assert params.decode_cursor(token) == position
    shifted = HandlerCursor(MOMENT.astimezone(timezone(timedelta(hours=-5))), "h-1")
    decoded = params.decode_cursor(params.encode_cursor(shifted))
    assert decoded == position
    assert decoded.started_at.tzinfo == timezone.utc


@pytest.mark.parametrize(
    "token",
    ["", "not base64!", "bnVsbA", "WyJ4Il0", "WyIyMDI2LTAzLTAxVDEyOjMwOjQ1IiwiaCJd", "W1tdLDFd"],
)
def test_cursor_tokens_not_made_here_are_refused(token: str) -> None:
    # null, ["x"], a naive moment, [[], 1]
    with pytest.raises(BadRequestError, match="Invalid cursor"):
        params.decode_cursor(token)


def test_body_handler_id_is_optional_and_checked() -> None:
    assert params.body_handler_id(None) is None
    assert params.body_handler_id("run-1") == "run-1"
    with pytest.raises(BadRequestError, match="it must be a string"):
        params.body_handler_id(7)
    with pytest.raises(BadRequestError):
        params.body_handler_id("a b/c")


def test_fingerprint_ignores_key_order_and_tells_bodies_apart() -> None:
    one = params.fingerprint("greet", {"a": 1, "b": [1, 2]})
    assert one == params.fingerprint("greet", {"b": [1, 2], "a": 1})
    assert one != params.fingerprint("other", {"a": 1, "b": [1, 2]})
    assert one != params.fingerprint("greet", {"a": 2, "b": [1, 2]})


def test_event_body_needs_an_object_with_an_event() -> None:
    assert params.event_body({"event": {"type": "X"}}) == ({"type": "X"}, None)
    assert params.event_body({"event": "{}", "step": "s"}) == ("{}", "s")
    for body, message in [
        ([], "must be a JSON object"),
        ({}, "Event data is required"),
        ({"event": {"type": "X"}, "step": 3}, "Invalid step"),
    ]:
        with pytest.raises(BadRequestError, match=message):
            params.event_body(body)


def test_start_event_from_start_event_or_legacy_kwargs() -> None:
    registry = WorkflowRegistry()
    registry.add("greet", GreetWorkflow(), ())
    entry = registry.get("greet")
    assert params.start_event(entry, {"start_event": None}) is None
    started = params.start_event(entry, {"start_event": {"name": "Ada"}})
    legacy = params.start_event(entry, {"kwargs": {"name": "Ada"}})
    assert started.model_dump() == legacy.model_dump()
    with pytest.raises(BadRequestError, match=r"^Invalid start_event: "):
        params.start_event(entry, {"start_event": "not json"})


def test_context_field_takes_an_object_or_its_json_text() -> None:
    assert params.context_field(None) is None
    assert params.context_field("") is None
    assert params.context_field({}) is None
    assert params.context_field({"state": 1}) == {"state": 1}
    assert params.context_field('{"state": 1}') == {"state": 1}
    for value in ["[1]", "{", 3, ["x"]]:
        with pytest.raises(BadRequestError, match="Invalid context"):
            params.context_field(value)


def test_handler_json_writes_the_wire_model_keys_in_order() -> None:
    row = PersistentHandler(
        handler_id="h", workflow_name="greet", status="running", started_at=MOMENT
    )
    body = handler_json(row)
    assert list(body) == list(HandlerData.model_fields)
    assert HandlerData.model_validate(body).model_dump(mode="json") == body
