"""``service.waiting``: waiting until a run's outcome is written, here or elsewhere."""

from __future__ import annotations

import asyncio

import pytest
from workflows.events import StartEvent

from llama_workflows_asgi import WorkflowService
from llama_workflows_asgi.errors import HandlerNotFoundError, StoreUnavailableError
from tests.service.conftest import serving, sqlite_store
from tests.support.factories import handler

pytestmark = pytest.mark.timeout(20)


async def test_the_wait_returns_the_row_the_terminal_write_left(
    memory_service: WorkflowService,
) -> None:
    run = await memory_service.start_run("greet")
    done = await memory_service._waiter.wait_for(run.handler_id, None)
    assert done.status == "completed"
    assert done.result is not None
    assert done.result.result == {"greeting": "Hello, World!"}
    stored = await memory_service.get(run.handler_id)
    fields = ("handler_id", "run_id", "status", "error", "completed_at", "owner_id")
    assert [getattr(done, f) for f in fields] == [getattr(stored, f) for f in fields]


async def test_the_wait_is_scoped_to_the_caller(memory_service: WorkflowService) -> None:
    await memory_service.store.update(handler("theirs", principal="bob", status="completed"))
    with pytest.raises(HandlerNotFoundError):
        await memory_service._waiter.wait_for("theirs", ["alice"])
    mine = await memory_service._waiter.wait_for("theirs", ["bob"])
    assert mine.status == "completed"


async def test_another_callers_live_run_is_reported_missing_at_once(
    memory_service: WorkflowService,
) -> None:
    run = await memory_service.start_run("hitl", principal="bob")
    assert run.handler_id in memory_service._live  # live here, and waiting for input
    with pytest.raises(HandlerNotFoundError):
        await memory_service._waiter.wait_for(run.handler_id, ["alice"])


async def test_a_run_elsewhere_is_waited_for_in_the_store(sqlite_url: str) -> None:
    async with (
        serving(sqlite_store(sqlite_url)).running_context() as a,
        serving(sqlite_store(sqlite_url)).running_context() as b,
    ):
        run = await a.start_run("slow", StartEvent(seconds=0.2))
        assert run.handler_id not in b._live
        done = await b._waiter.wait_for(run.handler_id, None)
    assert done.status == "completed"


async def test_a_graceful_stop_ends_the_wait(memory_service: WorkflowService) -> None:
    run = await memory_service.start_run("hitl")
    waiting = asyncio.ensure_future(memory_service._waiter.wait_for(run.handler_id, None))
    await asyncio.sleep(0)  # it is waiting
    memory_service.begin_stop()
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(waiting, 10)
