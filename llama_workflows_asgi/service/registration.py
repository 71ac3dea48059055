"""Serving a workflow: its checks, its move onto the service's runtime, its result classes.

A workflow instance runs on one service only: registration moves it onto that
service's runtime (refused if it already ran elsewhere), allows its declared
events through the runtime's checkpoints, and tells the store which StopEvent
classes its results read back as.
"""

from __future__ import annotations

from collections.abc import Iterable

from workflows import Workflow
from workflows.events import Event, StopEvent

from .. import codec
from .._engine import move_to_runtime
from ..registry import RegisteredWorkflow
from ..versions import check_version
from .rooms import Basis


def register_workflow(
    basis: Basis,
    name: str,
    workflow: Workflow,
    additional_events: Iterable[type[Event]],
    version: str | None,
) -> RegisteredWorkflow:
    """Serve ``workflow`` as ``name`` on ``basis`` (see ``WorkflowService.add_workflow``)."""
    if version is not None:
        check_version(version)  # before the workflow moves onto this runtime
    workflow.validate()
    try:
        move_to_runtime(workflow, basis.runtime)
    except RuntimeError as exc:
        raise ValueError(
            f"Workflow {name!r} has already run elsewhere; register a fresh instance"
        ) from exc
    entry = basis.registry.add(name, workflow, additional_events, version)
    entry.events.max_depth = basis.config.max_json_depth
    basis.runtime.allow_types(workflow, (*entry.declared_events, *codec.FRAMEWORK_EVENTS))
    for cls in (*entry.declared_events, workflow.stop_event_class):
        if issubclass(cls, StopEvent):
            basis.store.result_classes.setdefault(codec.qualified_name(cls), cls)
    return entry
