"""A live run of ``GreetWorkflow`` built alone, for tests of a single run's bookkeeping."""

from __future__ import annotations

from llama_workflows_asgi.registry import WorkflowRegistry
from llama_workflows_asgi.service.live import LiveRun
from llama_workflows_asgi.service.runtime import DurableRuntime
from tests.support.factories import handler
from tests.support.workflows import GreetWorkflow


def new_run(dirty: list[LiveRun]) -> LiveRun:
    """Handler ``h1``, numbering from 5, appended to ``dirty`` when it has something to write."""
    workflow = GreetWorkflow()
    entry = WorkflowRegistry().add("greet", workflow, ())
    return LiveRun(
        handler("h1", workflow_name="greet"),
        workflow=entry,
        serializer=DurableRuntime().get_serializer(workflow),
        next_sequence=5,
        on_dirty=dirty.append,
        on_idle=lambda _: None,
        checkpoints=True,
    )
