"""``service.supervisor``: ownership rounds between processes sharing one database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from workflows.events import StartEvent

from llama_workflows_asgi import WorkflowService
from tests.service.conftest import serving, sqlite_store
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def pair(sqlite_url: str) -> AsyncIterator[tuple[WorkflowService, WorkflowService]]:
    """Two running services on one database, as two processes."""
    async with (
        serving(sqlite_store(sqlite_url)).running_context() as a,
        serving(sqlite_store(sqlite_url)).running_context() as b,
    ):
        yield a, b


async def test_a_run_cancelled_elsewhere_stops_here_at_the_next_round(
    pair: tuple[WorkflowService, WorkflowService],
) -> None:
    a, b = pair
    run = await a.start_run("slow", StartEvent(seconds=30))
    assert await b.cancel(run.handler_id) == "cancelled"  # written in the store by b
    await a._supervisor.round()
    assert run.handler_id not in a._live
    assert (await a.get(run.handler_id)).status == "cancelled"


async def test_an_event_sent_elsewhere_is_delivered_by_the_owner_round(
    pair: tuple[WorkflowService, WorkflowService],
) -> None:
    a, b = pair
    run = await a.start_run("hitl")
    await b.send_event(run.handler_id, {"type": "AnswerEvent", "value": {"answer": "far"}})
    assert run.handler_id not in b._live  # a owns it: b only recorded the event
    await a._supervisor.round()
    done = await a.wait_for(run.handler_id)
    assert done.result is not None
    assert done.result.result == "got far"


async def test_a_round_renews_leases_and_reports_how_long_it_was_silent(
    pair: tuple[WorkflowService, WorkflowService],
) -> None:
    a, _ = pair
    run = await a.start_run("slow", StartEvent(seconds=30))
    before = time.monotonic()
    await a._supervisor.round()
    # The rounds go on: silence is counted from the last one, which ended after `before`.
    await eventually(
        lambda: a._supervisor.silent_for() < time.monotonic() - before, "a round after ours"
    )
    assert run.handler_id in a._live  # still owned here
    assert await a._supervisor.adopt([run.handler_id]) == 0  # nothing left to claim
