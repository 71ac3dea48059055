"""``service.checkpoint``: the mirror of a run's control loop, and the checkpoint taken of it."""

from __future__ import annotations

import json

import pytest
from workflows import Context, Workflow, step
from workflows.events import StartEvent, StopEvent

from llama_workflows_asgi import _engine
from llama_workflows_asgi._engine import TickAddEvent, TickTimeout, WorkflowTick
from llama_workflows_asgi._json import dumps
from llama_workflows_asgi.service.checkpoint import StateMirror, may_fail_run
from llama_workflows_asgi.service.observed import _Detached  # drops every other report
from llama_workflows_asgi.service.runtime import DurableRuntime
from tests.support.workflows import CounterWorkflow

pytestmark = pytest.mark.timeout(20)


class Mirroring(_Detached):
    """A ``RunObserver`` that only mirrors the loop, as a live run does."""

    def __init__(self, mirror: StateMirror) -> None:
        self.mirror = mirror
        self.ticked: list[bool] = []

    def observe_tick(self, tick: WorkflowTick) -> None:
        self.mirror.observe_tick(tick)
        self.ticked.append(self.mirror.ticked)


def test_a_timeout_may_fail_a_run_and_an_added_event_may_not() -> None:
    assert may_fail_run(TickTimeout(timeout=1.0))
    assert not may_fail_run(TickAddEvent(event=StartEvent()))


def test_nothing_is_to_checkpoint_before_the_run_is_attached() -> None:
    workflow = CounterWorkflow()
    mirror = StateMirror(DurableRuntime().get_serializer(workflow))
    assert not mirror.ticked
    with pytest.raises(AssertionError):
        mirror.checkpoint(failed=False)


async def test_the_checkpoint_is_the_loop_state_after_its_latest_tick() -> None:
    workflow, runtime = CounterWorkflow(), DurableRuntime()
    serializer = runtime.get_serializer(workflow)
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    try:
        observer = Mirroring(StateMirror(serializer))
        loop = runtime.observe("c1", observer)
        handler = workflow.run(run_id="c1", start_event=StartEvent())
        observer.mirror.attach(runtime.get_external_adapter("c1"), loop)
        assert await handler == {"count": 1}
        runtime.forget("c1", observer)
    finally:
        await runtime.destroy()
    assert observer.ticked
    assert all(observer.ticked)  # every tick since the start is new
    ctx = json.loads(observer.mirror.checkpoint(failed=False))
    assert not observer.mirror.ticked  # taken of the latest state
    restored = Context.from_dict(workflow, ctx, serializer=serializer)
    assert await restored.store.get("count") == 1


ODD = {"tiny": 2.5e-05, "huge": 1e300, "text": "é\u2028\u2029\x85\x00"}


class OddValuesWorkflow(Workflow):
    """Keeps values whose JSON spelling varies between encoders in its state and its stream."""

    @step
    async def keep(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("odd", ODD)
        await ctx.store.set("big", 2**70)
        return StopEvent(result="kept")


async def test_the_checkpoint_is_the_json_of_the_engines_serialized_context() -> None:
    workflow, runtime = OddValuesWorkflow(), DurableRuntime()
    serializer = runtime.get_serializer(workflow)
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    try:
        mirror = StateMirror(serializer)
        loop = runtime.observe("o1", Mirroring(mirror))
        handler = workflow.run(run_id="o1", start_event=StartEvent())
        adapter = runtime.get_external_adapter("o1")
        mirror.attach(adapter, loop)
        assert await handler == "kept"
    finally:
        await runtime.destroy()
    text = mirror.checkpoint(failed=False)
    assert mirror._seen is not None
    expected = mirror._seen.to_serialized(serializer)
    expected.state = adapter.get_state_store(()).to_dict(serializer)
    assert json.loads(text) == json.loads(dumps(expected.model_dump(mode="json")))
    assert not {"\u2028", "\u2029", "\x85"} & set(text)  # one line
    restored = Context.from_dict(workflow, json.loads(text), serializer=serializer)
    assert await restored.store.get("odd") == ODD
    assert await restored.store.get("big") == 2**70
