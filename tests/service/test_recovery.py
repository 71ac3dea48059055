"""``service.recovery``: claimed rows become live runs again, or fail alone."""

from __future__ import annotations

import pytest
from workflows.events import StartEvent

from llama_workflows_asgi import HandlerQuery, PersistentHandler, WorkflowService
from tests.service.conftest import serving, sqlite_store
from tests.support.factories import handler
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)


async def test_a_run_released_by_one_process_is_resumed_by_the_next(sqlite_url: str) -> None:
    first = serving(sqlite_store(sqlite_url))
    async with first.running_context():
        started = await first.start_run("slow", StartEvent(seconds=30))
    # The first process stopped: its run is released mid-step, for the next owner.
    async with serving(sqlite_store(sqlite_url)).running_context() as second:
        await eventually(lambda: started.handler_id in second._live, "the run is resumed")
        live = second._live.get(started.handler_id)
        assert live is not None
        assert live.run_id == started.run_id  # the same run goes on
        assert await second.cancel(started.handler_id) == "cancelled"


async def resume(service: WorkflowService, **fields: object) -> PersistentHandler:
    """Resume the row ``h1`` made of ``fields``, as a claim hands it over."""
    start = StartEvent().model_dump(mode="json")
    await service.store.update(handler("h1", start_event=start, **fields))
    await service._recovery.resume_batch(await service.store.query(HandlerQuery()))
    return await service.get("h1")


async def test_a_run_of_a_workflow_not_served_here_fails_alone(
    memory_service: WorkflowService,
) -> None:
    other = await memory_service.start_run("hitl")
    row = await resume(memory_service, workflow_name="retired")
    assert row.status == "failed"
    assert row.error == "Cannot resume: workflow 'retired' is not registered on this server"
    assert (await memory_service.get(other.handler_id)).status == "running"


async def test_a_run_that_kept_crashing_its_process_is_given_up(
    memory_service: WorkflowService,
) -> None:
    attempts = memory_service.config.max_resume_attempts + 1
    row = await resume(memory_service, workflow_name="hitl", resume_attempts=attempts)
    assert row.status == "failed"
    assert str(row.error).startswith("Gave up resuming after")


async def test_a_resumable_row_becomes_live_from_its_start_event(
    memory_service: WorkflowService,
) -> None:
    row = await resume(memory_service, workflow_name="hitl")
    assert row.status == "running"
    live = memory_service._live.get("h1")
    assert live is not None
    assert live.handler is not None  # its engine runs here
    await memory_service.send_event("h1", {"type": "AnswerEvent", "value": {"answer": "y"}})
    done = await memory_service.wait_for("h1")
    assert done.status == "completed"
