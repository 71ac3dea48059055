"""The engine's private API, in one place.

Durability needs a few things ``llama-index-workflows`` does not offer publicly:
moving a workflow onto our runtime, the step table and a step's accepted
events, the control loop itself and the state it keeps (to checkpoint without
replaying), and the runtime internals (ticks, tasks, adapters, registrations)
a runtime decorator works with. Everything of the engine that is underscored, or lives
under ``workflows.runtime`` rather than the package's public surface, is reached
through this module only; the rest of the package imports the names below.

Checked against llama-index-workflows 2.26.1 (``pyproject.toml`` pins
``>=2.26.1,<2.27``). Before widening the pin, run ``tests/unit/test_engine.py``: it
checks that each thing used here still exists and behaves as relied upon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from workflows import Workflow
from workflows.context.serializers import BaseSerializer
from workflows.events import Event, StopEvent
from workflows.handler import WorkflowHandler
from workflows.runtime.control_loop.runner import _ControlLoopRunner
from workflows.runtime.runtime_decorators import (
    BaseInternalRunAdapterDecorator,
    BaseRuntimeDecorator,
)
from workflows.runtime.types.internal_state import BrokerState
from workflows.runtime.types.named_task import (
    NamedTask,
    PendingStart,
    PendingWorker,
    all_tasks,
    pick_highest_priority,
)
from workflows.runtime.types.plugin import (
    ExternalRunAdapter,
    InternalRunAdapter,
    RegisteredWorkflow,
    Runtime,
    WaitForNextTaskResult,
    WeakIdentityKeyDictionary,
    as_snapshottable_adapter,
    as_v2_runtime_compatibility_shim,
    consume_current_run,
)
from workflows.runtime.types.results import StepWorkerFailed
from workflows.runtime.types.step_function import (
    as_step_worker_functions,
    create_workflow_run_function,
)
from workflows.runtime.types.step_id import StepId
from workflows.runtime.types.ticks import (
    TickAddEvent,
    TickIdleRelease,
    TickPublishEvent,
    TickSessionStart,
    TickStepResult,
    TickTimeout,
    WorkflowTick,
)

__all__ = [
    "BaseInternalRunAdapterDecorator",
    "BaseRuntimeDecorator",
    "BrokerState",
    "ExternalRunAdapter",
    "InternalRunAdapter",
    "LoopRunner",
    "NamedTask",
    "PendingStart",
    "PendingWorker",
    "RegisteredWorkflow",
    "StepId",
    "StepWorkerFailed",
    "TickAddEvent",
    "TickIdleRelease",
    "TickPublishEvent",
    "TickSessionStart",
    "TickStepResult",
    "TickTimeout",
    "WaitForNextTaskResult",
    "WeakIdentityKeyDictionary",
    "WorkflowTick",
    "abort",
    "all_tasks",
    "cache_step_table",
    "compose_serializer",
    "decorated",
    "initial_state",
    "move_to_runtime",
    "pick_highest_priority",
    "register_observed",
    "step_accepts",
    "step_names",
    "when_done",
]


def move_to_runtime(workflow: Workflow, runtime: Runtime) -> None:
    """Make ``runtime`` run ``workflow``; raises ``RuntimeError`` if it already ran elsewhere.

    The engine has no public way to move a constructed workflow onto another
    runtime; this is the one it uses itself.
    """
    workflow._switch_runtime(runtime)


def cache_step_table(workflow: Workflow) -> None:
    """Make ``workflow`` introspect its step table once, not on every run and every step.

    The engine calls ``_get_steps()`` once per step it runs and twice per run,
    and each call walks the instance with ``inspect.getmembers`` (tens of
    microseconds). The table changes only when a step is added to the class,
    which bumps ``_step_functions_version`` (the engine's own cache key for
    validation): the cached table is rebuilt then. Callers get a copy.
    """
    if "_get_steps" in vars(workflow):
        return
    cls, build = type(workflow), workflow._get_steps
    cached: tuple[int, dict[str, Any]] | None = None

    def get_steps() -> dict[str, Any]:
        nonlocal cached
        version = cls._step_functions_version
        if cached is None or cached[0] != version:
            cached = (version, build())
        return dict(cached[1])

    workflow._get_steps = get_steps  # type: ignore[method-assign]


def step_table_version(workflow: Workflow) -> int:
    """The version of ``workflow``'s class step table: it changes when a step is added."""
    return int(type(workflow)._step_functions_version)


def step_names(workflow: Workflow) -> set[str]:
    """The names of the workflow's steps (the engine's own table of steps)."""
    return set(workflow._get_steps())


def step_accepts(workflow: Workflow, step: str, event: Event) -> bool:
    """Whether ``step``'s signature takes ``event`` (the engine's own check)."""
    try:
        workflow._validate_valid_step_message(step, event)
    except Exception:
        return False
    return True


def initial_state(adapter: ExternalRunAdapter) -> BrokerState:
    """The control-loop state a started run began from (to mirror it tick by tick)."""
    snapshottable = as_snapshottable_adapter(adapter)
    if snapshottable is None:
        raise RuntimeError("the engine runtime does not expose run snapshots")
    return snapshottable.init_state


def abort(adapter: ExternalRunAdapter) -> None:
    """Cancel a run's control loop at once, emitting nothing (the engine's v2 hard abort)."""
    shim = as_v2_runtime_compatibility_shim(adapter)
    if shim is not None:
        shim.abort()


def when_done(handler: WorkflowHandler, callback: Callable[[BaseException | None], None]) -> None:
    """Call ``callback`` once the run of ``handler`` has stopped, with what stopped it.

    ``None`` when it returned its stop event, else the exception its result
    raises (``CancelledError`` when it was cancelled). The handler's result task
    is what ``stop_event_result()`` awaits; a callback on it costs no task.
    """

    def done(task: asyncio.Future[Any]) -> None:
        callback(asyncio.CancelledError() if task.cancelled() else task.exception())

    handler._result_task.add_done_callback(done)


def decorated(runtime: BaseRuntimeDecorator) -> Runtime:
    """The runtime a decorator forwards to."""
    inner: Runtime = runtime._decorated
    return inner


def compose_serializer(
    runtime: Runtime, workflow: Workflow, base: BaseSerializer, *types: type[Any]
) -> BaseSerializer:
    """``base`` resolving the workflow's declared types plus ``types`` (the runtime caches it)."""
    return runtime._compose_serializer(workflow, base, *types)


class LoopRunner(Protocol):
    """A run's control loop, as a checkpoint reads it: the state it has reduced so far."""

    state: BrokerState


def register_observed(
    workflow: Workflow, on_loop: Callable[[InternalRunAdapter, LoopRunner], None]
) -> RegisteredWorkflow:
    """The engine's registration of ``workflow``, whose control loop is handed to ``on_loop``.

    The loop is the engine's own (``control_loop`` without changes): ``on_loop``
    receives the run's internal adapter and the loop before it reduces its first
    tick, so the loop's current state can be read instead of reduced again.
    Registering costs the step table's introspection, so the caller keeps it.
    """

    async def control_loop(
        start_event: Event | None, init_state: BrokerState | None, run_id: str
    ) -> StopEvent:
        run = consume_current_run()
        state = init_state or BrokerState.from_workflow(run.workflow)
        runner = _ControlLoopRunner(run.workflow, run.run_adapter, run.context, run.steps, state)
        on_loop(run.run_adapter, runner)
        return await runner.run(start_event=start_event)

    return RegisteredWorkflow(
        workflow=workflow,
        workflow_run_fn=create_workflow_run_function(workflow, control_loop),
        steps=as_step_worker_functions(workflow),
    )
