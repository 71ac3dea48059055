"""``PersistentHandler.result``: the run's StopEvent, from every form the reference accepts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError
from workflows.context.serializers import JsonSerializer
from workflows.events import StartEvent, StopEvent

from llama_workflows_asgi import (
    HandlerQuery,
    MemoryWorkflowStore,
    PersistentHandler,
    WorkflowService,
)
from llama_workflows_asgi.codec import envelope, readable_error
from llama_workflows_asgi.store.base import RESULT_CLASSES
from tests.support.workflows import CustomWorkflow, MyStop

MY_STOP = "tests.support.workflows.MyStop"


def handler(result: Any, classes: dict[str, type[StopEvent]] | None = None) -> PersistentHandler:
    values = {"handler_id": "h", "workflow_name": "w", "status": "completed", "result": result}
    return PersistentHandler.model_validate(values, context={RESULT_CLASSES: classes or {}})


@pytest.mark.parametrize(
    "given",
    [
        StopEvent(result={"greeting": "hi"}),
        JsonSerializer().serialize_value(StopEvent(result={"greeting": "hi"})),
        envelope(StopEvent(result={"greeting": "hi"})),
        {"greeting": "hi"},  # a legacy plain value
    ],
    ids=["event", "serializer format", "wire envelope", "legacy dict"],
)
def test_every_form_gives_the_stop_event(given: Any) -> None:
    got = handler(given)
    assert type(got.result) is StopEvent
    assert got.result.result == {"greeting": "hi"}
    assert got.result_envelope() == envelope(StopEvent(result={"greeting": "hi"}))


def test_a_registered_stop_class_is_rebuilt_from_its_stored_forms() -> None:
    classes: dict[str, type[StopEvent]] = {MY_STOP: MyStop}
    for given in (
        MyStop(answer=84, topic="cats"),
        envelope(MyStop(answer=84, topic="cats")),
        JsonSerializer().serialize_value(MyStop(answer=84, topic="cats")),
    ):
        got = handler(given, classes)
        assert got.result == MyStop(answer=84, topic="cats")


def test_an_unknown_stop_class_reads_as_a_plain_stop_event_shown_as_stored() -> None:
    stored = envelope(MyStop(answer=84, topic="cats"))
    got = handler(stored)
    assert type(got.result) is StopEvent
    assert got.result.result == {"answer": 84, "topic": "cats"}
    assert got.result_envelope() == stored  # the wire format is unchanged
    assert got.model_dump()["result"] == stored
    # Never imported: a class name only resolves among the classes given.
    assert handler({**stored, "qualified_name": "os.system"}).result == StopEvent(
        result={"answer": 84, "topic": "cats"}
    )


def test_a_replaced_result_is_shown_as_the_new_one() -> None:
    got = handler(envelope(StopEvent(result=1)))
    changed = got.model_copy(update={"result": StopEvent(result=2)})
    assert changed.result_envelope() == envelope(StopEvent(result=2))
    assert handler(None).result is None
    assert handler(None).result_envelope() is None


def test_a_service_teaches_its_store_the_workflows_stop_classes() -> None:
    store = MemoryWorkflowStore()
    service = WorkflowService(store)
    service.add_workflow("custom", CustomWorkflow())
    assert store.result_classes[MY_STOP] is MyStop

    async def run() -> PersistentHandler:
        async with service.running_context():
            await service.run("custom", StartEvent(topic="cats", count=2))
            [row] = await store.query(HandlerQuery())
            return row

    row = asyncio.run(run())
    assert row.result == MyStop(answer=84, topic="cats")


def test_memory_store_refuses_a_negative_max_completed() -> None:
    with pytest.raises(ValueError, match="max_completed"):
        MemoryWorkflowStore(max_completed=-1)
    assert MemoryWorkflowStore(0).max_completed == 0
    assert MemoryWorkflowStore(None).max_completed is None


def test_errors_for_callers_name_the_problem_without_paths_or_urls() -> None:
    serializer = JsonSerializer(allowed_types=[])
    stored = {"__is_pydantic": True, "value": {}, "qualified_name": MY_STOP}
    with pytest.raises(ValueError, match="allowed types") as refused:
        serializer.deserialize_value(stored)
    text = readable_error(refused.value)
    assert text.startswith("the checkpoint holds a MyStop")
    assert "additional_events" in text
    assert "tests.support" not in text

    with pytest.raises(ValidationError) as caught:
        MyStop.model_validate({"answer": "x"})
    text = readable_error(caught.value)
    assert "http" not in text
    assert "answer" in text
