"""``service.cancelling``: cancelling runs live here or not, and deleting handlers."""

from __future__ import annotations

import pytest
from workflows.events import StartEvent

from llama_workflows_asgi import HandlerQuery, WorkflowService
from llama_workflows_asgi.errors import ConflictError, HandlerNotFoundError
from tests.support.factories import handler

pytestmark = pytest.mark.timeout(20)


async def test_a_live_run_is_cancelled_through_its_engine(memory_service: WorkflowService) -> None:
    run = await memory_service.start_run("slow", StartEvent(seconds=30))
    row = await memory_service.get(run.handler_id)
    assert await memory_service._canceller.cancel(row, purge=False) == "cancelled"
    stored = await memory_service.get(run.handler_id)
    assert stored.status == "cancelled"
    events = await memory_service.store.read_events(str(run.run_id))
    assert events[-1].event_type == "WorkflowCancelledEvent"


async def test_a_run_not_live_here_is_cancelled_in_the_store(
    memory_service: WorkflowService,
) -> None:
    row = handler("elsewhere", workflow_name="slow", owner_id="another process")
    await memory_service.store.update(row)
    assert await memory_service._canceller.cancel(row, purge=False) == "cancelled"
    assert (await memory_service.get("elsewhere")).status == "cancelled"
    [event] = await memory_service.store.read_events("run-elsewhere")
    assert event.event_type == "WorkflowCancelledEvent"


async def test_a_finished_handler_is_a_conflict_unless_purged(
    memory_service: WorkflowService,
) -> None:
    done = await memory_service.run("greet")
    with pytest.raises(ConflictError, match="already completed"):
        await memory_service._canceller.cancel(done, purge=False)
    assert await memory_service._canceller.cancel(done, purge=True) == "deleted"
    assert await memory_service.store.query(HandlerQuery(handler_id_in=[done.handler_id])) == []
    with pytest.raises(HandlerNotFoundError):
        await memory_service._canceller.cancel(done, purge=True)  # deleted meanwhile


async def test_purging_a_running_handler_cancels_then_deletes_it(
    memory_service: WorkflowService,
) -> None:
    run = await memory_service.start_run("hitl")
    row = await memory_service.get(run.handler_id)
    assert await memory_service._canceller.cancel(row, purge=True) == "deleted"
    assert run.handler_id not in memory_service._live
    with pytest.raises(HandlerNotFoundError):
        await memory_service.get(run.handler_id)


async def test_a_purged_handler_leaves_no_log_in_memory(memory_service: WorkflowService) -> None:
    done = await memory_service.run("greet")
    assert done.run_id is not None
    ended = memory_service._live.ended
    assert ended.events_after(done.run_id, -1) is not None  # kept for a stream opening late
    assert await memory_service._canceller.cancel(done, purge=True) == "deleted"
    assert ended.events_after(done.run_id, -1) is None
