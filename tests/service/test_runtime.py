"""``service.runtime``: the engine's runtime, reporting what each observed run does."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest
from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi import _engine
from llama_workflows_asgi.service.runtime import DurableRuntime
from tests.support.waiting import eventually
from tests.support.workflows import CounterWorkflow, GreetWorkflow, ProgressEvent

pytestmark = pytest.mark.timeout(20)


class Recorder:
    """A ``RunObserver`` that keeps every report."""

    def __init__(self) -> None:
        self.ticks: list[Any] = []
        self.events: list[Event] = []
        self.state_changes = 0
        self.tasks: list[asyncio.Task[Any]] = []
        self.interrupts: list[BaseException] = []

    def observe_tick(self, tick: Any) -> None:
        self.ticks.append(tick)

    def observe_event(self, event: Event) -> None:
        self.events.append(event)

    def observe_state_change(self) -> None:
        self.state_changes += 1

    def track_task(self, task: asyncio.Task[Any]) -> None:
        self.tasks.append(task)

    def observe_interrupt(self, exc: BaseException) -> None:
        self.interrupts.append(exc)


async def run_observed(workflow: Workflow, run_id: str, **start: Any) -> tuple[Any, Recorder]:
    runtime, recorder = DurableRuntime(), Recorder()
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    try:
        runtime.observe(run_id, recorder)
        result = await workflow.run(run_id=run_id, start_event=StartEvent(**start))
        runtime.forget(run_id)
        return result, recorder
    finally:
        await runtime.destroy()


async def test_an_observed_run_reports_its_ticks_events_and_tasks() -> None:
    result, seen = await run_observed(GreetWorkflow(), "r1", name="Ada")
    assert result == {"greeting": "Hello, Ada!"}
    progress = [e for e in seen.events if isinstance(e, ProgressEvent)]
    assert [e.i for e in progress] == [0, 1, 2]
    assert isinstance(seen.events[-1], StopEvent)
    assert seen.ticks  # the control loop's ticks, to checkpoint from
    assert seen.tasks
    assert all(t.done() for t in seen.tasks)


async def test_state_store_edits_are_reported() -> None:
    result, seen = await run_observed(CounterWorkflow(), "r2")
    assert result == {"count": 1}
    assert seen.state_changes >= 1


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
        runtime.forget("freed")
        watched = weakref.ref(recorder)
        del recorder, handler, loop
        await eventually(lambda: watched() is None, "the observer is freed")
    finally:
        gc.enable()
        await runtime.destroy()


class Interrupting(Workflow):
    @step
    async def stop_everything(self, ctx: Context, ev: StartEvent) -> StopEvent:
        raise KeyboardInterrupt


async def test_an_interrupt_in_a_step_is_reported_not_raised_out_of_the_loop() -> None:
    runtime, recorder = DurableRuntime(), Recorder()
    workflow = Interrupting(timeout=None)
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    try:
        runtime.observe("r3", recorder)
        handler = workflow.run(run_id="r3")
        await eventually(lambda: bool(recorder.interrupts), "the step raised")
        assert [type(e) for e in recorder.interrupts] == [KeyboardInterrupt]
        _engine.abort(runtime.get_external_adapter("r3"))
        with pytest.raises(BaseException):  # noqa: PT011, B017 - aborted, however it ends
            await asyncio.wait_for(handler, 5)
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
