"""``service.inputs``: handler ids, idempotency keys and events a start or a send accepts."""

from __future__ import annotations

import pytest
from workflows.events import StartEvent

from llama_workflows_asgi import codec
from llama_workflows_asgi.errors import BadEventError, BadRequestError
from llama_workflows_asgi.registry import RegisteredWorkflow, WorkflowRegistry
from llama_workflows_asgi.service.inputs import (
    check_handler_id,
    new_id,
    scoped_key,
    start_event_for,
    storable_envelope,
    stored_key,
)
from llama_workflows_asgi.service.runtime import DurableRuntime
from tests.support.workflows import CustomWorkflow, MyStart


def custom() -> RegisteredWorkflow:
    return WorkflowRegistry().add("custom", CustomWorkflow())


def test_handler_ids_and_keys() -> None:
    assert check_handler_id("a-B_1.~:@") == "a-B_1.~:@"
    for bad in ("", ".", "..", "a/b", "x" * 256, "é"):
        with pytest.raises(BadRequestError):
            check_handler_id(bad)
    assert len({new_id() for _ in range(100)}) == 100
    assert scoped_key("alice", "k") != scoped_key("bob", "k")
    assert scoped_key(None, "k") == scoped_key(None, "k")


def test_a_stored_key_is_the_scoped_key_and_an_empty_key_is_refused() -> None:
    assert stored_key("alice", None) is None
    assert stored_key("alice", "k") == scoped_key("alice", "k")
    with pytest.raises(BadRequestError, match="Idempotency-Key"):
        stored_key("alice", "  ")


def test_the_start_event_becomes_the_workflow_start_class() -> None:
    entry = custom()
    given = MyStart(topic="t")
    assert start_event_for(entry, given) is given
    converted = start_event_for(entry, StartEvent(topic="u"))
    assert isinstance(converted, MyStart)
    assert (converted.topic, converted.count) == ("u", 1)
    with pytest.raises(BadEventError, match="Invalid MyStart"):
        start_event_for(entry, None)  # MyStart needs a topic


def test_an_event_is_accepted_only_if_it_decodes_back_unchanged() -> None:
    entry = custom()
    serializer = DurableRuntime().get_serializer(entry.workflow)
    event = MyStart(topic="t", count=2)
    assert storable_envelope(entry, event, serializer, start=True) == codec.envelope(event)
    with pytest.raises(BadEventError, match="Invalid event"):
        storable_envelope(entry, MyStart(topic="\ud800"), serializer, start=True)
