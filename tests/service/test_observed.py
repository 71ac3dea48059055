"""``service.observed``: what one observed run reports, how its steps are contained."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any

import pytest
from workflows import Context, Workflow, step
from workflows.context.serializers import JsonSerializer
from workflows.context.state_store import DictState, InMemoryStateStore
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi import _engine
from llama_workflows_asgi.service.observed import ObservedStateStore, start_contained
from llama_workflows_asgi.service.runtime import DurableRuntime
from tests.support.observing import Recorder, run_observed
from tests.support.waiting import eventually
from tests.support.workflows import CounterWorkflow

pytestmark = pytest.mark.timeout(20)


async def test_state_store_edits_are_reported() -> None:
    result, seen = await run_observed(CounterWorkflow(), "r2")
    assert result == {"count": 1}
    assert seen.state_changes >= 1


def observed_store() -> tuple[ObservedStateStore, InMemoryStateStore[DictState], list[str]]:
    inner: InMemoryStateStore[DictState] = InMemoryStateStore(DictState())
    changes: list[str] = []
    return ObservedStateStore(inner, lambda: changes.append("changed")), inner, changes


async def test_every_committed_edit_is_reported_and_reads_are_not() -> None:
    store, inner, changes = observed_store()
    await store.set("a", 1)
    assert await store.get("a") == 1
    assert await store.get("missing", "default") == "default"
    state = await store.get_state()
    assert len(changes) == 1  # reads report nothing
    await store.set_state(state)
    async with store.edit_state() as editing:
        editing["b"] = 2
    assert await inner.get("b") == 2
    await store.clear()
    assert len(changes) == 4
    serializer = JsonSerializer()
    assert store.to_dict(serializer) == inner.to_dict(serializer)
    assert store.state_type is inner.state_type  # anything else is the inner store's


async def test_an_edit_that_raises_is_not_reported() -> None:
    store, inner, changes = observed_store()

    async def edit_then_give_up() -> None:
        async with store.edit_state() as editing:
            editing["c"] = 3
            raise ValueError("given up")

    with pytest.raises(ValueError, match="given up"):
        await edit_then_give_up()
    assert changes == []
    assert await inner.get("c", None) is None  # nor committed


async def test_a_detached_store_still_edits_but_reports_nothing() -> None:
    store, inner, changes = observed_store()
    store.detach()
    await store.set("a", 1)
    await store.clear()
    assert changes == []
    assert await inner.get("a", None) is None  # the clear went through


async def contain(coro: Coroutine[Any, Any, Any]) -> tuple[asyncio.Task[Any], Recorder]:
    """``coro`` started as a step worker is, and run until its task is done."""
    recorder = Recorder()
    task = start_contained(coro, coro, recorder)
    await asyncio.wait([task])
    return task, recorder


async def test_a_step_cancelling_itself_is_reported_instead_of_hanging_the_run() -> None:
    async def cancels_itself() -> None:
        raise asyncio.CancelledError

    task, recorder = await contain(cancels_itself())
    assert task.cancelled()
    # Before Python 3.11 a task cannot tell a step's own CancelledError from
    # its cancellation: it is taken for one there.
    expected = [asyncio.CancelledError] if hasattr(task, "cancelling") else []
    assert [type(e) for e in recorder.interrupts] == expected


async def test_system_exit_in_a_step_is_reported_and_stays_in_the_loop() -> None:
    async def exits() -> None:
        raise SystemExit(3)

    task, recorder = await contain(exits())
    assert task.cancelled()  # not propagated out of the event loop
    assert [type(e) for e in recorder.interrupts] == [SystemExit]


async def test_a_step_that_fails_or_returns_is_left_to_the_engine() -> None:
    async def fails() -> None:
        raise RuntimeError("the engine handles this")

    async def returns() -> str:
        return "value"

    failed, recorder = await contain(fails())
    assert isinstance(failed.exception(), RuntimeError)
    returned, recorder_too = await contain(returns())
    assert returned.result() == "value"
    assert recorder.interrupts == recorder_too.interrupts == []
    assert recorder.tasks == recorder.ended == [failed]  # its start and end (called back first)


async def test_a_real_cancellation_is_not_reported() -> None:
    recorder, started = Recorder(), asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    coro = waits()
    task = start_contained(coro, coro, recorder)
    await started.wait()
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()
    assert recorder.interrupts == []


async def test_a_task_cancelled_before_it_ran_closes_its_coroutines() -> None:
    async def never_started() -> None:
        await asyncio.Event().wait()

    async def wrapper(inner: Coroutine[Any, Any, Any]) -> Any:
        return await inner

    inner = never_started()
    outer = wrapper(inner)
    task = start_contained(inner, outer, Recorder())
    task.cancel()
    await asyncio.wait([task])
    # Closed, not left for the collector to warn that they were never awaited.
    assert inspect.getcoroutinestate(inner) == inspect.CORO_CLOSED
    assert inspect.getcoroutinestate(outer) == inspect.CORO_CLOSED


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


class Mark(Event):
    n: int


async def test_an_event_is_observed_when_its_step_writes_it_not_when_the_engine_gets_to_it() -> (
    None
):
    # A checkpoint may be taken whenever the step awaits: one taken right after the
    # write holds the state edit before it, so it must find the event observed too.
    recorder = Recorder()
    seen_at_write: list[tuple[int, int]] = []

    class EditsThenWrites(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
            for n in range(3):
                async with ctx.store.edit_state() as state:
                    state["n"] = n
                ctx.write_event_to_stream(Mark(n=n))
                marks = [e.n for e in recorder.events if isinstance(e, Mark)]
                seen_at_write.append((recorder.state_changes, len(marks)))
                await asyncio.sleep(0)
            return StopEvent(result="done")

    workflow = EditsThenWrites(timeout=10)
    runtime = DurableRuntime()
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    try:
        runtime.observe("r-marks", recorder)
        assert await workflow.run(run_id="r-marks", start_event=StartEvent()) == "done"
    finally:
        await runtime.destroy()
    assert seen_at_write == [(1, 1), (2, 2), (3, 3)]
    assert [e.n for e in recorder.events if isinstance(e, Mark)] == [0, 1, 2]
