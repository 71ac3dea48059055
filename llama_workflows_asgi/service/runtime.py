"""The engine runtime the service runs workflows on.

It is the engine's own asyncio runtime with one adapter decorator in front:
every run reports its control-loop ticks, the events it streams, the edits to
its state store and the tasks it starts to an observer (the service's
``LiveRun``), and hands over its control loop (a ``RunLoop``), whose state a
checkpoint reads as the loop left it. That is all durability needs:
checkpoints come from the loop's state, the event log from the streamed events.

Each workflow is registered once, its step table introspected once (the
engine's own runtime does both on every run, the latter on every step too),
and the engine's in-memory journal of every tick is not kept: nothing replays
it, and it would grow with the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Protocol

from workflows import Workflow
from workflows.context.serializers import BaseSerializer, JsonSerializer
from workflows.context.state_store import StateStore
from workflows.events import Event
from workflows.plugins.basic import BasicRuntime

from .. import _engine
from .._engine import (
    BaseInternalRunAdapterDecorator,
    BaseRuntimeDecorator,
    BrokerState,
    InternalRunAdapter,
    LoopRunner,
    NamedTask,
    PendingStart,
    PendingWorker,
    RegisteredWorkflow,
    WaitForNextTaskResult,
    WeakIdentityKeyDictionary,
    WorkflowTick,
    all_tasks,
)
from .._engine import pick_highest_priority as _pick_first
from ..telemetry import step_coroutine

_NO_TYPES = JsonSerializer(allowed_types=[])
"""The base of a workflow's default serializer (its declared types are added to a copy)."""


class RunObserver(Protocol):
    """What a run reports while it executes."""

    def observe_tick(self, tick: WorkflowTick) -> None:
        """A tick was reduced by the run's control loop."""

    def observe_event(self, event: Event) -> None:
        """The run wrote an event to its stream."""

    def observe_state_change(self) -> None:
        """A step committed an edit to the run's state store."""

    def track_task(self, task: asyncio.Task[Any]) -> None:
        """The control loop started a task (a step worker or its mailbox pull)."""

    def observe_interrupt(self, exc: BaseException) -> None:
        """A step raised what the engine does not handle (``KeyboardInterrupt``...)."""


class RunLoop:
    """One observed run's control loop, once it has started: the state it reduced so far."""

    __slots__ = ("_runner",)

    def __init__(self) -> None:
        self._runner: LoopRunner | None = None

    def bind(self, runner: LoopRunner) -> None:
        """The engine started the run's loop."""
        self._runner = runner

    def unbind(self) -> None:
        """The run is forgotten: its state is no longer read here."""
        self._runner = None

    @property
    def state(self) -> BrokerState | None:
        """The loop's state after its latest tick (states are copied, never changed in place)."""
        return None if self._runner is None else self._runner.state


class _Observed:
    """What the runtime keeps for one observed run."""

    __slots__ = ("adapter", "loop", "observer")

    def __init__(self, observer: RunObserver) -> None:
        self.observer = observer
        self.loop = RunLoop()
        self.adapter: _ObservedAdapter | None = None


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

    def forget(self, run_id: str) -> None:
        """Stop reporting ``run_id``: nothing it does from now on reaches its observer."""
        observed = self._observers.pop(run_id, None)
        if observed is not None and observed.adapter is not None:
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
            observed.adapter = _ObservedAdapter(inner, observed.observer, observed.loop)
        return observed.adapter


def _bind_loop(adapter: InternalRunAdapter, runner: LoopRunner) -> None:
    """A run's control loop started: an observed run's ``RunLoop`` reads its state."""
    if isinstance(adapter, _ObservedAdapter):
        adapter.loop.bind(runner)


class _ObservedAdapter(BaseInternalRunAdapterDecorator):
    """Forwards to the engine's adapter and reports to the run's observer."""

    def __init__(self, decorated: InternalRunAdapter, observer: RunObserver, loop: RunLoop) -> None:
        super().__init__(decorated)
        self._observer = observer
        self.loop = loop
        self._stores: dict[int, ObservedStateStore] = {}

    def detach(self) -> None:
        """Report nothing more (the run is forgotten), and hold no reference to the observer."""
        self._observer = _DETACHED
        self.loop.unbind()
        for store in self._stores.values():
            store.detach()

    async def on_tick(self, tick: WorkflowTick) -> None:
        # Not forwarded: the engine's adapter would journal the tick in memory
        # for a replay nothing here does (checkpoints read the loop's state).
        self._observer.observe_tick(tick)

    async def write_to_event_stream(self, event: Event) -> None:
        # Streamed events go to the run's event log, not to the engine's
        # in-memory publish queue, which nobody reads and would only grow.
        self._observer.observe_event(event)

    def get_state_store(self, namespace: tuple[str, ...] = ()) -> StateStore[Any] | None:
        store = super().get_state_store(namespace)
        if store is None or namespace:
            return store
        wrapped = self._stores.get(id(store))
        if wrapped is None:
            wrapped = ObservedStateStore(store, self._observer.observe_state_change)
            self._stores = {id(store): wrapped}
        return wrapped

    async def wait_for_next_task(
        self,
        running: list[NamedTask],
        pending: list[PendingStart],
        timeout: float | None = None,
    ) -> WaitForNextTaskResult:
        # Same contract as the engine's default, but every task started here is
        # reported, so stopping a run can cancel its steps: cancelling the
        # control loop alone leaves a step that is mid-await running.
        started = [p.start(_start_contained(p.coro, _traced(p), self._observer)) for p in pending]
        for named in started:
            self._observer.track_task(named.task)
        candidates = running + started
        tasks = all_tasks(candidates)
        if not tasks:
            return WaitForNextTaskResult(None, started)
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return WaitForNextTaskResult(_pick_first(candidates, done) if done else None, started)


def _start_contained(
    inner: Coroutine[Any, Any, Any], coro: Coroutine[Any, Any, Any], observer: RunObserver
) -> asyncio.Task[Any]:
    """A task awaiting ``coro`` (``inner``, or a wrapper of it) under ``_contained``."""
    task = asyncio.create_task(_contained(coro, observer))

    def close(_: asyncio.Task[Any]) -> None:
        # A task cancelled before it ran never awaited them: close them quietly
        # (closing a finished coroutine does nothing).
        coro.close()
        inner.close()

    task.add_done_callback(close)
    return task


async def _contained(coro: Coroutine[Any, Any, Any], observer: RunObserver) -> Any:
    """Await a step worker, turning what would escape the engine into a failed run.

    The engine handles a step's ``Exception``; a ``KeyboardInterrupt`` or
    ``SystemExit`` would propagate out of the event loop and stop the whole
    server, and a ``CancelledError`` the step raised itself (its task was not
    cancelled) would leave the run waiting forever.
    """
    try:
        return await coro
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        cancelling = getattr(task, "cancelling", None)  # Python 3.11+
        if cancelling is None or cancelling():
            raise  # a real cancellation
        observer.observe_interrupt(exc)
        raise
    except (KeyboardInterrupt, SystemExit) as exc:
        observer.observe_interrupt(exc)
        raise asyncio.CancelledError from exc


def _traced(pending: PendingStart) -> Any:
    """A pending task's coroutine; a step execution's is traced (when tracing runs)."""
    if isinstance(pending, PendingWorker):
        return step_coroutine(pending.step_id.name, pending.worker_id, pending.coro)
    return pending.coro


class _Detached:
    """The observer of a forgotten run: every report is dropped."""

    def observe_tick(self, tick: WorkflowTick) -> None:
        pass

    def observe_event(self, event: Event) -> None:
        pass

    def observe_state_change(self) -> None:
        pass

    def track_task(self, task: asyncio.Task[Any]) -> None:
        pass

    def observe_interrupt(self, exc: BaseException) -> None:
        pass


_DETACHED = _Detached()


def _unreported() -> None:
    """The state-change report of a forgotten run."""


class ObservedStateStore:
    """A run's state store that reports every committed edit."""

    def __init__(self, inner: StateStore[Any], on_change: Callable[[], None]) -> None:
        self._inner = inner
        self._on_change = on_change

    def detach(self) -> None:
        """Report nothing more (the run is forgotten)."""
        self._on_change = _unreported

    async def get_state(self) -> Any:
        return await self._inner.get_state()

    async def set_state(self, state: Any) -> None:
        await self._inner.set_state(state)
        self._on_change()

    async def get(self, path: str, default: Any = ...) -> Any:
        return await self._inner.get(path, default)

    async def set(self, path: str, value: Any) -> None:
        await self._inner.set(path, value)
        self._on_change()

    async def clear(self) -> None:
        await self._inner.clear()
        self._on_change()

    @asynccontextmanager
    async def edit_state(self) -> AsyncIterator[Any]:
        async with self._inner.edit_state() as state:
            yield state
        self._on_change()

    def to_dict(self, serializer: BaseSerializer) -> dict[str, Any]:
        return self._inner.to_dict(serializer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
