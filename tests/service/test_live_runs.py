"""``service.live_runs``: the one answer to "is this run live here?", and forgetting runs."""

from __future__ import annotations

import asyncio

import pytest

from llama_workflows_asgi import MemoryWorkflowStore, ServiceConfig
from llama_workflows_asgi.errors import ConflictError
from llama_workflows_asgi.registry import RegisteredWorkflow, WorkflowRegistry
from llama_workflows_asgi.service.live_runs import LiveRuns
from llama_workflows_asgi.service.ownership import Owner
from llama_workflows_asgi.service.runtime import DurableRuntime
from tests.support.factories import handler
from tests.support.workflows import GreetWorkflow

pytestmark = pytest.mark.timeout(10)


def live_runs(
    config: ServiceConfig | None = None, runtime: DurableRuntime | None = None
) -> tuple[LiveRuns, RegisteredWorkflow]:
    runtime = runtime or DurableRuntime()
    entry = WorkflowRegistry().add("greet", GreetWorkflow(), ())
    runs = LiveRuns(
        MemoryWorkflowStore(), Owner.for_this_process(), config or ServiceConfig(), runtime
    )
    return runs, entry


def test_a_registered_run_is_found_by_handler_and_by_run() -> None:
    runs, entry = live_runs()
    live = runs.register(handler("h1", workflow_name="greet"), entry, next_sequence=4)
    assert "h1" in runs
    assert len(runs) == 1
    assert list(runs) == [live]
    assert runs.get("h1") is live
    assert runs.of_run("h1", "run-h1") is live
    assert runs.of_run("h1", "another run") is None
    assert runs.find_run("run-h1") is live
    assert runs.is_current(live)
    assert live.durable_sequence == 3  # what was written before it became live here
    assert runs.attached("h1", "run-h1") is None  # no engine yet


def test_a_handler_is_live_at_most_once() -> None:
    runs, entry = live_runs()
    runs.register(handler("h1", workflow_name="greet"), entry, 0)
    with pytest.raises(ConflictError, match="already running"):
        runs.register(handler("h1", workflow_name="greet", run_id="r2"), entry, 0)


def test_unregister_forgets_only_the_current_run() -> None:
    runs, entry = live_runs()
    old = runs.register(handler("h1", workflow_name="greet"), entry, 0)
    runs.unregister(old)
    new = runs.register(handler("h1", workflow_name="greet", run_id="r2"), entry, 0)
    runs.unregister(old)  # a late unregister of the old run leaves the new one alone
    assert runs.get("h1") is new
    assert not runs.is_current(old)
    runs.retire(new)
    assert "h1" not in runs
    assert runs.values() == []


def test_a_late_loss_of_an_old_run_leaves_the_engine_observer_of_its_successor() -> None:
    runtime = DurableRuntime()
    runs, entry = live_runs(runtime=runtime)
    old = runs.register(handler("h1", workflow_name="greet"), entry, 0)
    runtime.observe(old.run_id, old)
    runs.lose(old)
    new = runs.register(handler("h1", workflow_name="greet"), entry, 0)  # same run id
    runtime.observe(new.run_id, new)
    runs.lose(old)  # a second, late loss of the old run
    observed = runtime._observers[new.run_id]  # what the engine's adapter will report to
    assert observed.observer is new
    runs.lose(new)
    assert new.run_id not in runtime._observers


def test_a_lost_run_is_finished_and_forgotten() -> None:
    runs, entry = live_runs()
    live = runs.register(handler("h1", workflow_name="greet"), entry, 0)
    runs.lose(live)
    assert live.finished.is_set()
    assert runs.get("h1") is None


async def test_background_work_is_tracked_and_cancelled_on_clear() -> None:
    runs, entry = live_runs()
    runs.register(handler("h1", workflow_name="greet"), entry, 0)
    runs.spawn(asyncio.sleep(60))
    [task] = runs.background
    runs.clear()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs.background == set()
    assert len(runs) == 0


async def test_idle_release_is_scheduled_only_while_releasing_idle_runs() -> None:
    runs, entry = live_runs(ServiceConfig(idle_timeout=30.0))
    live = runs.register(handler("h1", workflow_name="greet"), entry, 0)
    runs.schedule_idle_release(live)
    assert live.idle_timer is None  # the service is not running
    runs.releases_idle = True
    runs.schedule_idle_release(live)
    timer = live.idle_timer
    assert timer is not None
    runs.unregister(live)
    assert timer.cancelled()  # a forgotten run keeps no timer
