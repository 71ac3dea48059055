"""``service.runtime``: the engine's runtime, reporting what each observed run does."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi import _engine
from llama_workflows_asgi.service.runtime import DurableRuntime
from tests.support.observing import Recorder, run_observed
from tests.support.waiting import eventually
from tests.support.workflows import CounterWorkflow, GreetWorkflow, ProgressEvent

pytestmark = pytest.mark.timeout(20)


async def test_an_observed_run_reports_its_ticks_events_and_tasks() -> None:
    result, seen = await run_observed(GreetWorkflow(), "r1", name="Ada")
    assert result == {"greeting": "Hello, Ada!"}
    progress = [e for e in seen.events if isinstance(e, ProgressEvent)]
    assert [e.i for e in progress] == [0, 1, 2]
    assert isinstance(seen.events[-1], StopEvent)
    assert seen.ticks  # the control loop's ticks, to checkpoint from
    assert seen.tasks
    assert all(t.done() for t in seen.tasks)

    def all_ended() -> bool:
        return len(seen.ended) == len(seen.tasks) and set(seen.ended) == set(seen.tasks)

    await eventually(all_ended, "every task's end reported, once")


async def test_a_forgotten_run_is_freed_without_the_cycle_collector() -> None:
    # The observer holds the run's handler and loop (as the service's live run
    # does) and the run's adapter holds the observer: forgetting cuts that.
    runtime, workflow = DurableRuntime(), CounterWorkflow()
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    gc.collect()
    gc.disable()
    try:
        recorder = Recorder()
        loop = runtime.observe("freed", recorder)
        handler = workflow.run(run_id="freed", start_event=StartEvent())
        recorder.held = (handler, loop)  # type: ignore[attr-defined]
        assert await handler == {"count": 1}
        runtime.forget("freed", recorder)
        watched = weakref.ref(recorder)
        del recorder, handler, loop
        await eventually(lambda: watched() is None, "the observer is freed")
    finally:
        gc.enable()
        await runtime.destroy()


class Gated(Workflow):
    """Streams one event and stops, once its gate is opened."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.gate = asyncio.Event()

    @step
    async def wait_then_stream(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await self.gate.wait()
        ctx.write_event_to_stream(ProgressEvent(msg="after the gate", i=0))
        return StopEvent(result="done")


async def test_a_run_forgotten_midway_reports_nothing_more_to_its_observer() -> None:
    runtime, workflow, recorder = DurableRuntime(), Gated(), Recorder()
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    try:
        runtime.observe("g1", recorder)
        handler = workflow.run(run_id="g1", start_event=StartEvent())
        await eventually(lambda: bool(recorder.tasks), "the step started")
        runtime.forget("g1", recorder)
        reported = (len(recorder.ticks), len(recorder.events), len(recorder.tasks))
        workflow.gate.set()
        assert await asyncio.wait_for(handler, 10) == "done"
        assert (len(recorder.ticks), len(recorder.events), len(recorder.tasks)) == reported
    finally:
        await runtime.destroy()


async def test_forgetting_an_older_observer_of_a_run_id_leaves_the_newer_one() -> None:
    # A run observed anew under the same run id (a retry, a claim back), then
    # the old observer forgotten late: the new one must still hear the run.
    runtime, workflow = DurableRuntime(), GreetWorkflow()
    old, new = Recorder(), Recorder()
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    try:
        runtime.observe("again", old)
        runtime.observe("again", new)
        runtime.forget("again", old)
        result = await workflow.run(run_id="again", start_event=StartEvent(name="Ada"))
        assert result == {"greeting": "Hello, Ada!"}
        assert [e.i for e in new.events if isinstance(e, ProgressEvent)] == [0, 1, 2]
        assert isinstance(new.events[-1], StopEvent)
        assert old.events == []
        runtime.forget("again", new)
        runtime.forget("again", new)  # a second forget of the same observer does nothing
    finally:
        await runtime.destroy()


class Extra(Event):
    note: str


def test_allowed_types_are_resolved_by_the_workflow_serializer() -> None:
    runtime, workflow = DurableRuntime(), GreetWorkflow()
    before = runtime.get_serializer(workflow)
    with pytest.raises(Exception, match="Extra"):
        before.deserialize(before.serialize(Extra(note="n")))
    runtime.allow_types(workflow, (Extra,))
    after = runtime.get_serializer(workflow)
    assert after.deserialize(after.serialize(Extra(note="n"))) == Extra(note="n")


class GrowsAStep(Workflow):
    """Its start step waits forever when asked to: a step added later answers first."""

    @step
    async def first(self, ev: StartEvent) -> StopEvent:
        if ev.get("wait"):
            await asyncio.Event().wait()
        return StopEvent(result="first")


async def test_a_step_added_to_the_class_after_a_run_is_registered_for_the_next() -> None:
    workflow, runtime = GrowsAStep(), DurableRuntime()
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    try:
        runtime.observe("before", Recorder())
        assert await workflow.run(run_id="before", start_event=StartEvent()) == "first"

        @step(workflow=GrowsAStep)
        async def later(ev: StartEvent) -> StopEvent:
            return StopEvent(result="later")

        runtime.observe("after", Recorder())
        started = workflow.run(run_id="after", start_event=StartEvent(wait=True))
        assert await asyncio.wait_for(started, 10) == "later"
    finally:
        await runtime.destroy()
