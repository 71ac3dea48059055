"""Retrying a failed run from its last checkpoint, through the service and over HTTP.

Every test runs on the memory store, SQLite and a real PostgreSQL (``make_store``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from workflows import Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi import (
    ConflictError,
    HandlerNotFoundError,
    HandlerQuery,
    ServiceConfig,
    SqlAlchemyWorkflowStore,
    WorkflowServer,
    WorkflowService,
)
from llama_workflows_asgi.store import StoredEvent
from tests.support.flaky import FiveSteps
from tests.support.servers import serving
from tests.support.stores import StoreFactory
from tests.support.workflows import make_workflows

pytestmark = pytest.mark.timeout(60)

CONFIG = ServiceConfig(lease_ttl=3.0, poll_interval=0.1, stream_poll_interval=0.05)


@pytest.fixture
async def flaky(make_store: StoreFactory) -> AsyncIterator[tuple[WorkflowService, FiveSteps]]:
    workflow = FiveSteps()
    service = WorkflowService(make_store(), config=CONFIG, scoped=True)
    service.add_workflow("five", workflow)
    service.add_workflow("greet", make_workflows()["greet"])
    async with service.running_context():
        yield service, workflow


async def read_stream(service: WorkflowService, handler_id: str, after: int) -> list[StoredEvent]:
    stream = await service.open_stream(handler_id, principal="ann", after=after)
    assert stream is not None
    return [event async for batch in stream if isinstance(batch, list) for event in batch]


def types(events: list[StoredEvent]) -> list[str]:
    return [e.event_type for e in events]


async def test_retry_resumes_at_the_failed_step(
    flaky: tuple[WorkflowService, FiveSteps],
) -> None:
    service, workflow = flaky
    failed = await service.run("five", principal="ann")
    assert (failed.status, failed.error) == ("failed", "s3 is not ready yet")
    assert workflow.journal == ["s1", "s2", "s3"]

    retried = await service.retry(failed.handler_id, principal="ann")
    assert (retried.status, retried.error, retried.run_id) == ("running", None, failed.run_id)
    done = await service.wait_for(failed.handler_id, principal="ann")
    assert done.status == "completed", done.error
    assert done.error is None
    # Steps 1 and 2 ran once; step 3 ran again with the state it had saved.
    assert workflow.journal == ["s1", "s2", "s3", "s3", "s4", "s5"]
    assert done.result is not None
    assert done.result.result == {"n": 5, "attempts": 2}


async def test_a_follower_sees_the_retry_continue_the_log(
    flaky: tuple[WorkflowService, FiveSteps],
) -> None:
    service, _ = flaky
    failed = await service.run("five", principal="ann")
    first = await read_stream(service, failed.handler_id, after=-1)
    assert types(first) == ["Note", "Note", "Note", "WorkflowFailedEvent"]
    assert first[-1].terminal
    # Nothing after the failure until it is retried: the stream is over.
    last = first[-1].sequence
    assert await service.open_stream(failed.handler_id, principal="ann", after=last) is None

    await service.retry(failed.handler_id, principal="ann")
    after = await read_stream(service, failed.handler_id, after=last)
    assert types(after) == ["Note", "Note", "Note", "StopEvent"]
    sequences = [e.sequence for e in after]
    assert sequences == sorted(sequences)
    assert sequences[0] > last
    assert [json.loads(e.payload)["value"]["step"] for e in after[:3]] == ["s3", "s4", "s5"]

    # A stream opened afterwards from the start runs through the old failure
    # (no longer final) to the new attempt's end.
    whole = await read_stream(service, failed.handler_id, after=-1)
    assert types(whole) == [*types(first), *types(after)]
    assert [e.terminal for e in whole].count(True) == 1
    assert whole[-1].terminal


async def test_only_failed_runs_of_the_caller_are_retried(
    flaky: tuple[WorkflowService, FiveSteps],
) -> None:
    service, _ = flaky
    failed = await service.run("five", principal="ann")
    with pytest.raises(HandlerNotFoundError):
        await service.retry(failed.handler_id, principal="bob")
    with pytest.raises(HandlerNotFoundError):
        await service.retry("nope", principal="ann")
    completed = await service.run("greet", principal="ann")
    with pytest.raises(ConflictError, match="completed"):
        await service.retry(completed.handler_id, principal="ann")
    await service.retry(failed.handler_id, principal="ann")
    with pytest.raises(ConflictError, match=r"running|completed"):
        await service.retry(failed.handler_id, principal="ann")
    assert (await service.wait_for(failed.handler_id, principal="ann")).status == "completed"


async def test_retry_over_http(make_store: StoreFactory) -> None:
    workflow = FiveSteps()
    server = WorkflowServer(make_store(), config=CONFIG)
    server.add_workflow("five", workflow)
    server.add_workflow("greet", make_workflows()["greet"])
    async with serving(server.app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        failed = (await http.post("/workflows/five/run", json={})).json()
        assert failed["status"] == "failed"
        response = await http.post(f"/handlers/{failed['handler_id']}/retry")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "running"
        assert response.json()["error"] is None
        events = await http.get(
            f"/events/{failed['handler_id']}", params={"sse": "false", "after_sequence": "-1"}
        )
        lines = [json.loads(line) for line in events.text.splitlines()]
        assert [e["type"] for e in lines][-2:] == ["Note", "StopEvent"]
        done = await http.get(f"/handlers/{failed['handler_id']}")
        assert (done.status_code, done.json()["status"]) == (200, "completed")

        again = await http.post(f"/handlers/{failed['handler_id']}/retry")
        assert again.status_code == 409
        assert "only failed runs" in again.json()["detail"]
        missing = await http.post("/handlers/nope/retry")
        assert (missing.status_code, missing.json()) == (
            404,
            {"detail": "Handler 'nope' not found"},
        )
    assert workflow.journal == ["s1", "s2", "s3", "s3", "s4", "s5"]


class Halfway(Event):
    pass


class HangsOnce(Workflow):
    """``first`` then ``hang``, which hangs on its first attempt (so the run times out)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.journal: list[str] = []

    @step
    async def first(self, ev: StartEvent) -> Halfway:
        self.journal.append("first")
        return Halfway()

    @step
    async def hang(self, ev: Halfway) -> StopEvent:
        self.journal.append("hang")
        if self.journal.count("hang") == 1:
            await asyncio.sleep(30)
        return StopEvent(result="done")


async def test_a_timed_out_run_is_retried_at_the_step_that_hung(make_store: StoreFactory) -> None:
    # The retry runs under the same timeout: room enough for it on a loaded machine.
    workflow = HangsOnce(timeout=2.0)
    service = WorkflowService(make_store(), config=CONFIG)
    service.add_workflow("hangs", workflow)
    async with service.running_context():
        failed = await service.run("hangs")
        assert failed.status == "failed"
        assert failed.error is not None
        assert "timed out" in failed.error
        await service.retry(failed.handler_id)
        done = await service.wait_for(failed.handler_id)
    assert done.status == "completed", done.error
    assert workflow.journal == ["first", "hang", "hang"]


async def test_a_run_of_another_version_is_not_retried_here(tmp_path: Path) -> None:
    """Reopened by a replica of another version, it would wait for one of its own: refused."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'versions.db'}"
    old = WorkflowService(SqlAlchemyWorkflowStore(url, migrate=True), config=CONFIG)
    old.add_workflow("five", FiveSteps(), version="v1")
    async with old.running_context():
        failed = await old.run("five")
    assert (failed.status, failed.version) == ("failed", "v1")

    new = WorkflowService(SqlAlchemyWorkflowStore(url, migrate=True), config=CONFIG)
    new.add_workflow("five", FiveSteps(), version="v2")
    async with new.running_context():
        with pytest.raises(ConflictError, match="version 'v1'"):
            await new.retry(failed.handler_id)
        [row] = await new.store.query(HandlerQuery(handler_id_in=[failed.handler_id]))
    assert row.status == "failed"  # refused before anything was written
