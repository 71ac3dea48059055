"""``_engine``: the engine's private API still exists and does what the package relies on.

An engine upgrade that renames or changes one of these fails here, by name,
rather than somewhere deep in a durability test.
"""

from __future__ import annotations

import asyncio
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from workflows import Context, Workflow, step
from workflows.context.serializers import JsonSerializer
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi import _engine
from llama_workflows_asgi.service.runtime import DurableRuntime
from tests.support.workflows import AnswerEvent, AskEvent, GreetWorkflow, HitlWorkflow

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]


class Undeclared(Event):
    """An event no step of ``HitlWorkflow`` takes in its signature."""

    note: str


class Hold(Workflow):
    """Waits until its task is cancelled."""

    @step
    async def hold(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await asyncio.Event().wait()
        return StopEvent()


def test_the_installed_engine_is_the_one_pinned_and_named_in_the_docstring() -> None:
    assert '"llama-index-workflows>=2.26.1,<2.27"' in (ROOT / "pyproject.toml").read_text()
    assert re.fullmatch(r"2\.26\.\d+", version("llama-index-workflows"))
    assert "llama-index-workflows 2.26.1" in str(_engine.__doc__)


def test_step_names_are_the_workflow_steps() -> None:
    assert _engine.step_names(HitlWorkflow()) == {"ask", "done"}


def test_step_accepts_follows_the_step_signature() -> None:
    workflow = HitlWorkflow()
    assert _engine.step_accepts(workflow, "done", AnswerEvent(answer="x"))
    assert not _engine.step_accepts(workflow, "done", Undeclared(note="x"))
    assert not _engine.step_accepts(workflow, "ask", AskEvent(question="q"))
    assert not _engine.step_accepts(workflow, "missing", AnswerEvent(answer="x"))


async def test_move_to_runtime_moves_a_fresh_workflow_and_refuses_one_that_ran() -> None:
    workflow, runtime = GreetWorkflow(), DurableRuntime()
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    try:
        result = await workflow.run(start_event=StartEvent(name="x"))
        assert result == {"greeting": "Hello, x!"}
        with pytest.raises(RuntimeError):
            _engine.move_to_runtime(workflow, DurableRuntime())
    finally:
        await runtime.destroy()


def test_decorated_is_the_runtime_a_decorator_forwards_to() -> None:
    runtime = DurableRuntime()
    inner = _engine.decorated(runtime)
    assert inner is not runtime
    assert not isinstance(inner, _engine.BaseRuntimeDecorator)


def test_compose_serializer_resolves_the_declared_and_the_extra_types() -> None:
    workflow = HitlWorkflow()
    base = JsonSerializer(allowed_types=[])
    serializer = _engine.compose_serializer(DurableRuntime(), workflow, base, Undeclared)
    for event in (AnswerEvent(answer="a"), Undeclared(note="n")):
        assert serializer.deserialize(serializer.serialize(event)) == event
    plain = _engine.compose_serializer(DurableRuntime(), workflow, base)
    with pytest.raises(Exception, match="Undeclared"):
        plain.deserialize(plain.serialize(Undeclared(note="n")))


async def test_a_run_exposes_its_state_which_checkpoints_and_aborts_at_once() -> None:
    workflow, runtime = Hold(), DurableRuntime()
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    try:
        handler = workflow.run(run_id="run-1")
        adapter = runtime.get_external_adapter("run-1")
        state = _engine.initial_state(adapter)
        assert isinstance(state, _engine.BrokerState)
        assert state.journal_seq == 0
        serializer = runtime.get_serializer(workflow)
        checkpoint = state.to_serialized(serializer).model_dump(mode="json")
        assert Context.from_dict(workflow, checkpoint, serializer=serializer) is not None
        _engine.abort(adapter)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(handler, 5)
    finally:
        await runtime.destroy()


async def test_when_done_reports_how_a_run_stopped() -> None:
    workflow, runtime = Hold(), DurableRuntime()
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    try:
        seen: list[BaseException | None] = []
        greeted = GreetWorkflow()
        _engine.move_to_runtime(greeted, runtime)
        await runtime.launch()
        finished = greeted.run(run_id="done-1", start_event=StartEvent(name="Ada"))
        _engine.when_done(finished, seen.append)
        held = workflow.run(run_id="held-1")
        _engine.when_done(held, seen.append)
        await finished
        _engine.abort(runtime.get_external_adapter("held-1"))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(held, 5)
        await asyncio.sleep(0)  # the callbacks run on the loop's next turn
        assert seen[0] is None
        assert isinstance(seen[1], asyncio.CancelledError)
    finally:
        await runtime.destroy()


def test_every_name_the_package_imports_from_the_engine_is_there() -> None:
    missing = [name for name in _engine.__all__ if not hasattr(_engine, name)]
    assert missing == []


class Later(Event):
    """Taken by a step added to ``Growing`` after its first run."""


class Growing(Workflow):
    """A workflow class a step is added to after it was introspected."""

    @step
    async def first(self, ev: StartEvent) -> StopEvent:
        return StopEvent()


def test_a_cached_step_table_is_a_copy_rebuilt_when_the_class_gains_a_step() -> None:
    workflow = Growing()
    before = workflow._get_steps()
    _engine.cache_step_table(workflow)
    assert workflow._get_steps() == before
    workflow._get_steps().clear()  # a caller's copy
    assert set(workflow._get_steps()) == {"first"}

    @step(workflow=Growing)
    async def later(ev: Later) -> StopEvent:
        return StopEvent()

    assert set(workflow._get_steps()) == {"first", "later"}
