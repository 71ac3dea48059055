"""``service.launch``: a live run onto the engine, and the failure of one that cannot run."""

from __future__ import annotations

import json

import pytest
from workflows.events import StopEvent

from llama_workflows_asgi import WorkflowService
from llama_workflows_asgi.service.launch import stored_event
from tests.support.factories import handler

pytestmark = pytest.mark.timeout(20)


def test_a_stored_event_is_its_envelope_numbered_by_the_store() -> None:
    stored = stored_event(StopEvent(result=3))
    assert stored.sequence == -1
    assert (stored.event_type, stored.terminal, stored.internal) == ("StopEvent", True, False)
    assert json.loads(stored.payload)["value"] == {"result": 3}


async def test_give_up_fails_the_run_with_its_reason_and_a_failure_event(
    memory_service: WorkflowService,
) -> None:
    await memory_service.store.update(handler("h1", workflow_name="hitl"))
    await memory_service._launcher.give_up("h1", "cannot run here")
    row = await memory_service.get("h1")
    assert (row.status, row.error) == ("failed", "cannot run here")
    [event] = await memory_service.store.read_events("run-h1")
    assert event.event_type == "WorkflowFailedEvent"


async def test_a_run_whose_checkpoint_does_not_load_fails_alone(
    memory_service: WorkflowService,
) -> None:
    row = handler("h1", workflow_name="hitl")
    await memory_service.store.update(row)
    live = memory_service._live.register(row, memory_service.registry.get("hitl"), 0)
    broken = {"version": 2, "is_running": True, "workers": 7}
    assert not await memory_service._launcher.launch_or_fail(live, broken, None)
    assert "h1" not in memory_service._live
    failed = await memory_service.get("h1")
    assert failed.status == "failed"
    assert str(failed.error).startswith("Cannot resume: ")


async def test_a_launched_run_executes_and_its_end_is_written(
    memory_service: WorkflowService,
) -> None:
    row = handler("h1", workflow_name="greet")
    await memory_service.store.update(row)
    live = memory_service._live.register(row, memory_service.registry.get("greet"), 0)
    entry = memory_service.registry.get("greet")
    start = entry.events.decode_start({})
    assert await memory_service._launcher.launch_or_fail(live, None, start)
    assert live.handler is not None
    done = await memory_service.wait_for("h1")
    assert done.status == "completed"
