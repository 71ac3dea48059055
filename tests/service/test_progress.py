"""``service.progress``: a live run's unwritten progress, its write in flight, what streams see."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from pydantic import BaseModel, Field
from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi import WorkflowService
from llama_workflows_asgi.service.live import LiveRun
from llama_workflows_asgi.store import (
    HandlerQuery,
    PersistentHandler,
    RunProgress,
    SqlAlchemyWorkflowStore,
)
from tests.support.factories import at
from tests.support.runs import new_run
from tests.support.waiting import eventually
from tests.support.workflows import ProgressEvent


def test_an_acknowledged_write_publishes_its_events_and_finishes_the_run() -> None:
    live = new_run([])
    live.observe_event(ProgressEvent(msg="a", i=0))
    live.observe_event(StopEvent(result={"x": 1}))
    assert live.outcome is not None
    assert live.outcome.status == "completed"
    assert json.loads(live.outcome.result or "")["value"] == {"result": {"x": 1}}
    events = live._pending.events
    assert [e.sequence for e in events] == [5, 6]
    written = RunProgress(
        "h1", "run-h1", owner_id="o", updated_at=at(2), events=events, status="completed"
    )
    live.acknowledge(written)
    assert live.durable_sequence == 6
    assert [e.sequence for e in live.tail] == [5, 6]
    assert live.finished.is_set()
    assert live.settled
    assert live.final is not None
    assert (live.final.status, live.final.completed_at, live.final.owner_id) == (
        "completed",
        at(2),
        None,
    )


def test_a_failed_write_is_kept_for_the_next_one() -> None:
    dirty: list[LiveRun] = []
    live = new_run(dirty)
    live.observe_event(ProgressEvent(msg="a", i=0))
    events = list(live._pending.events)
    live._pending.events.clear()
    refused = RunProgress("h1", "run-h1", owner_id="o", updated_at=at(2), events=events)
    live.requeue(refused)
    assert live._pending.events == events
    assert not live.finished.is_set()
    assert dirty[-1] is live


def _write(live: LiveRun, count: int) -> RunProgress:
    for i in range(count):
        live.observe_event(ProgressEvent(msg="a", i=i))
    events, live._pending.events = live._pending.events, []
    written = RunProgress("h1", "run-h1", owner_id="o", updated_at=at(2), events=events)
    live.acknowledge(written)
    return written


def test_the_latest_two_writes_stay_whole_for_their_streams() -> None:
    live = new_run([])
    live._tail_size = 2
    _write(live, 3)  # sequences 5..7
    assert [e.sequence for e in live.tail] == [5, 6, 7]
    assert [e.sequence for e in live.events_after(4) or []] == [5, 6, 7]
    _write(live, 4)  # 8..11: this write and the previous one, whole
    assert [e.sequence for e in live.tail] == [5, 6, 7, 8, 9, 10, 11]
    _write(live, 1)  # 12: it, the previous write (8..11), and at most two before them
    assert [e.sequence for e in live.tail] == [6, 7, 8, 9, 10, 11, 12]
    assert [e.sequence for e in live.events_after(5) or []] == [6, 7, 8, 9, 10, 11, 12]
    assert live.events_after(4) is None  # 5 left the tail: the store has it
    _write(live, 1)  # 13: it, 12, and two before them
    assert [e.sequence for e in live.tail] == [10, 11, 12, 13]
    assert [e.sequence for e in live.events_after(11) or []] == [12, 13]
    assert live.events_after(13) == []  # nothing written after the cursor yet
    assert live.events_after(8) is None


class Middle(Event):
    """What the first step of ``GatedWorkflow`` hands to the second."""


class GatedWorkflow(Workflow):
    """Two steps, each streaming one event and then waiting for the test to open its gate."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.gates = [asyncio.Event(), asyncio.Event()]

    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Middle:
        ctx.write_event_to_stream(ProgressEvent(msg="first", i=0))
        await self.gates[0].wait()
        return Middle()

    @step
    async def second(self, ctx: Context, ev: Middle) -> StopEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="second", i=1))
        await self.gates[1].wait()
        return StopEvent(result="done")


async def test_a_run_is_checkpointed_once_a_resume_would_not_redo_it_the_same(
    tmp_path: Path,
) -> None:
    store = SqlAlchemyWorkflowStore(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}")
    workflow = GatedWorkflow()
    service = WorkflowService(store)
    service.add_workflow("gated", workflow)

    async def row_when_streamed(msg: str) -> PersistentHandler:
        async def streamed() -> bool:
            return msg in await _progress_written(store, started)

        await eventually(streamed, f"the {msg!r} event written")
        return await _stored_row(store, started)

    async with service.running_context():
        started = await service.start_run("gated", StartEvent())
        # Only the first step has started: resuming from the row as created redoes
        # exactly that, so its written progress carries no checkpoint.
        assert (await row_when_streamed("first")).ctx is None
        workflow.gates[0].set()
        # A step has returned: a resume must now start from what it returned.
        running = await row_when_streamed("second")
        assert running.ctx is not None
        assert running.ctx["is_running"]
        workflow.gates[1].set()
        done = await service.wait_for(started.handler_id)
        assert done.status == "completed"
        assert (await _stored_row(store, started)).ctx is not None


async def _progress_written(store: SqlAlchemyWorkflowStore, run: PersistentHandler) -> list[str]:
    """The ``msg`` of each ``ProgressEvent`` of ``run`` written so far."""
    logged = await store.read_events(run.run_id or "")
    return [
        str(json.loads(e.payload)["value"]["msg"])
        for e in logged
        if e.event_type == "ProgressEvent"
    ]


async def _stored_row(store: SqlAlchemyWorkflowStore, run: PersistentHandler) -> PersistentHandler:
    """``run``'s row as stored, its ``ctx`` included."""
    (row,) = await store.query(HandlerQuery(handler_id_in=[run.handler_id]))
    return row


class Minted(BaseModel):
    """A typed state whose fresh instance is never the same twice."""

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)


class MintingWorkflow(Workflow):
    """Streams its state's generated id, then waits: as a step sending it elsewhere would."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.gate = asyncio.Event()

    @step
    async def first(self, ctx: Context[Minted], ev: StartEvent) -> StopEvent:
        state = await ctx.store.get_state()
        ctx.write_event_to_stream(ProgressEvent(msg=state.request_id, i=0))
        await self.gate.wait()
        return StopEvent(result=state.request_id)


async def test_a_typed_state_is_checkpointed_before_any_step_returns(tmp_path: Path) -> None:
    store = SqlAlchemyWorkflowStore(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}")
    workflow = MintingWorkflow()
    service = WorkflowService(store)
    service.add_workflow("minting", workflow)
    async with service.running_context():
        started = await service.start_run("minting", StartEvent())

        async def streamed() -> bool:
            return bool(await _progress_written(store, started))

        await eventually(streamed, "the minted id written")
        (minted,) = await _progress_written(store, started)
        row = await _stored_row(store, started)
        # A resume from a row without it would mint another id: the first write keeps it.
        assert row.ctx is not None
        kept = json.loads(row.ctx["state"]["state_data"])
        assert kept["value"]["request_id"] == minted
        workflow.gate.set()
        assert (await service.wait_for(started.handler_id)).status == "completed"
