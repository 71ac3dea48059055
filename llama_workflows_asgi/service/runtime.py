"""The engine runtime the service runs workflows on.

It is the engine's own asyncio runtime with one adapter decorator in front
(``observed.py``): every run reports its control-loop ticks, the events it
streams, the edits to its state store and the tasks it starts to an observer
(the service's ``LiveRun``), and hands over its control loop (a ``RunLoop``),
whose state a checkpoint reads as the loop left it. That is all durability
needs: checkpoints come from the loop's state, the event log from the
streamed events. This module is the runtime itself: which runs are observed
and by whom, how workflows are registered, and their serializers.

Each workflow is registered once, its step table introspected once (the
engine's own runtime does both on every run, the latter on every step too),
and the engine's in-memory journal of every tick is not kept: nothing replays
it, and it would grow with the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workflows import Workflow
from workflows.context.serializers import BaseSerializer, JsonSerializer
from workflows.plugins.basic import BasicRuntime

from .. import _engine
from .._engine import (
    BaseRuntimeDecorator,
    InternalRunAdapter,
    LoopRunner,
    RegisteredWorkflow,
    WeakIdentityKeyDictionary,
)
from .observed import ObservedAdapter, RunLoop, RunObserver

__all__ = ["DurableRuntime", "RunLoop", "RunObserver"]  # the run's side lives in .observed

_NO_TYPES = JsonSerializer(allowed_types=[])
"""The base of a workflow's default serializer (its declared types are added to a copy)."""


class _Observed:
    """What the runtime keeps for one observed run."""

    __slots__ = ("adapter", "loop", "observer")

    def __init__(self, observer: RunObserver) -> None:
        self.observer = observer
        self.loop = RunLoop()
        self.adapter: ObservedAdapter | None = None


class _RegisteringOnce(BasicRuntime):
    """The engine's asyncio runtime, registering each workflow once, with its loop reported."""

    def __init__(self, on_loop: Callable[[InternalRunAdapter, LoopRunner], None]) -> None:
        super().__init__()
        self._on_loop = on_loop
        # Each registration with the step table's version it was built from.
        self._registered: WeakIdentityKeyDictionary[Workflow, tuple[int, RegisteredWorkflow]] = (
            WeakIdentityKeyDictionary()
        )

    def register(self, workflow: Workflow) -> RegisteredWorkflow:
        _engine.cache_step_table(workflow)
        version = _engine.step_table_version(workflow)
        registered = _engine.register_observed(workflow, self._on_loop)
        self._registered[workflow] = (version, registered)
        return registered

    def get_registered(self, workflow: Workflow) -> RegisteredWorkflow | None:
        # A step added to the class since: its step workers must be registered anew.
        entry = self._registered.get(workflow)
        if entry is None or entry[0] != _engine.step_table_version(workflow):
            return None
        return entry[1]


class DurableRuntime(BaseRuntimeDecorator):
    """The engine's asyncio runtime, reporting each observed run to its observer.

    Its default serializer resolves only the workflow's declared event and state
    types, so restoring a checkpoint never imports a module named in data.
    """

    def __init__(self) -> None:
        super().__init__(_RegisteringOnce(_bind_loop))
        self._observers: dict[str, _Observed] = {}
        self._extra_types: dict[int, tuple[type[Any], ...]] = {}

    def observe(self, run_id: str, observer: RunObserver) -> RunLoop:
        """Report the run ``run_id`` (about to start) to ``observer``; its loop, once started."""
        observed = self._observers[run_id] = _Observed(observer)
        return observed.loop

    def forget(self, run_id: str, observer: RunObserver) -> None:
        """Stop reporting ``run_id`` to ``observer``: nothing it does from now on reaches it.

        Only ``observer``'s own registration goes: a run observed anew since
        (a retry, a claim back of the same run id) keeps its newer observer,
        however late the old one is forgotten.
        """
        observed = self._observers.get(run_id)
        if observed is None or observed.observer is not observer:
            return
        del self._observers[run_id]
        if observed.adapter is not None:
            # The engine's objects of the run and its observer reference each
            # other through the adapter: cut that, and the whole run is freed
            # by reference counting instead of by the cyclic collector.
            observed.adapter.detach()

    def allow_types(self, workflow: Workflow, types: tuple[type[Any], ...]) -> None:
        """Let ``workflow``'s serializer also resolve ``types`` (its additional events).

        A checkpoint holds every event a run has seen or waits for, not only the
        ones in step signatures; without this a run waiting on
        ``ctx.wait_for_event`` could not be restored.
        """
        self._extra_types[id(workflow)] = tuple(dict.fromkeys(types))

    def get_serializer(self, workflow: Workflow) -> BaseSerializer:
        base = workflow.serializer or _NO_TYPES
        extra = self._extra_types.get(id(workflow), ())
        return _engine.compose_serializer(self, workflow, base, *extra)

    def get_internal_adapter(self, workflow: Workflow) -> InternalRunAdapter:
        inner = _engine.decorated(self).get_internal_adapter(workflow)
        observed = self._observers.get(inner.run_id)
        if observed is None:
            return inner
        if observed.adapter is None:
            # One per run: the engine asks again for every step it runs.
            observed.adapter = ObservedAdapter(inner, observed.observer, observed.loop)
        return observed.adapter


def _bind_loop(adapter: InternalRunAdapter, runner: LoopRunner) -> None:
    """A run's control loop started: an observed run's ``RunLoop`` reads its state."""
    if isinstance(adapter, ObservedAdapter):
        adapter.loop.bind(runner)
