"""A run observer that keeps every report, and a workflow run under it on its own runtime."""

from __future__ import annotations

import asyncio
from typing import Any

from workflows import Workflow
from workflows.events import Event, StartEvent

from llama_workflows_asgi import _engine
from llama_workflows_asgi.service.runtime import DurableRuntime


class Recorder:
    """A ``RunObserver`` that keeps every report."""

    def __init__(self) -> None:
        self.ticks: list[Any] = []
        self.events: list[Event] = []
        self.state_changes = 0
        self.tasks: list[asyncio.Task[Any]] = []
        self.ended: list[asyncio.Task[Any]] = []
        self.interrupts: list[BaseException] = []

    def observe_tick(self, tick: Any) -> None:
        self.ticks.append(tick)

    def observe_event(self, event: Event) -> None:
        self.events.append(event)

    def observe_state_change(self) -> None:
        self.state_changes += 1

    def track_task(self, task: asyncio.Task[Any]) -> None:
        self.tasks.append(task)

    def task_ended(self, task: asyncio.Task[Any]) -> None:
        self.ended.append(task)

    def observe_interrupt(self, exc: BaseException) -> None:
        self.interrupts.append(exc)


async def run_observed(workflow: Workflow, run_id: str, **start: Any) -> tuple[Any, Recorder]:
    """Run ``workflow`` to its end on a runtime of its own, observed by a new ``Recorder``."""
    runtime, recorder = DurableRuntime(), Recorder()
    _engine.move_to_runtime(workflow, runtime)
    await runtime.launch()
    try:
        runtime.observe(run_id, recorder)
        result = await workflow.run(run_id=run_id, start_event=StartEvent(**start))
        runtime.forget(run_id, recorder)
        return result, recorder
    finally:
        await runtime.destroy()
