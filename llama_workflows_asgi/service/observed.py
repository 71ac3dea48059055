"""One observed run, as the engine sees it: what it reports, and to whom.

The runtime (``runtime.py``) puts an :class:`ObservedAdapter` in front of the
engine's adapter of every run it observes. The adapter hands the run's ticks,
streamed events, state-store edits and started tasks to the run's
:class:`RunObserver` (the service's ``LiveRun``), runs each step worker inside
a guard that turns what would escape the engine into a failed run, and stops
reporting once the run is forgotten (:meth:`ObservedAdapter.detach`), so that
nothing the run does later reaches its old observer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Protocol

from workflows.context.serializers import BaseSerializer
from workflows.context.state_store import StateStore
from workflows.events import Event

from .._engine import (
    BaseInternalRunAdapterDecorator,
    BrokerState,
    InternalRunAdapter,
    LoopRunner,
    NamedTask,
    PendingStart,
    PendingWorker,
    WaitForNextTaskResult,
    WorkflowTick,
    all_tasks,
)
from .._engine import pick_highest_priority as _pick_first
from ..telemetry import step_coroutine


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

    def task_ended(self, task: asyncio.Task[Any]) -> None:
        """A task reported to :meth:`track_task` is done."""

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


class ObservedAdapter(BaseInternalRunAdapterDecorator):
    """Forwards to the engine's adapter and reports to the run's observer."""

    def __init__(self, decorated: InternalRunAdapter, observer: RunObserver, loop: RunLoop) -> None:
        super().__init__(decorated)
        self._observer = observer
        self.loop = loop
        # The engine asks for the adapter from its event loop: a step in
        # another thread is a synchronous one (run by an executor).
        self._loop_thread = threading.get_ident()
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

    def write_to_event_stream(self, event: Event) -> Coroutine[Any, Any, None]:
        # Streamed events go to the run's event log, not to the engine's
        # in-memory publish queue, which nobody reads and would only grow.
        # Observed when the step writes the event, not when the engine's task
        # for it runs: a checkpoint taken in between would hold the step's state
        # edits from before the event without the event, and a crash right
        # after its write would lose the event for good (the step, resumed
        # from those edits, does not write it again). A synchronous step's
        # thread has no event loop: its event is observed in the loop, when the
        # coroutine runs there, as the run's state may only change there.
        if threading.get_ident() != self._loop_thread:
            return self._observe_later(event)
        self._observer.observe_event(event)
        return _written()

    async def _observe_later(self, event: Event) -> None:
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
        started = [p.start(start_contained(p.coro, _traced(p), self._observer)) for p in pending]
        candidates = running + started
        tasks = all_tasks(candidates)
        if not tasks:
            return WaitForNextTaskResult(None, started)
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return WaitForNextTaskResult(_pick_first(candidates, done) if done else None, started)


def start_contained(
    inner: Coroutine[Any, Any, Any], coro: Coroutine[Any, Any, Any], observer: RunObserver
) -> asyncio.Task[Any]:
    """A step worker's task: ``coro`` (``inner``, or a wrapper of it) awaited under ``_contained``.

    What would escape the engine is reported to ``observer`` instead, and so
    are the task's start and end (one callback, not one per concern: each is
    a turn of the event loop).
    """
    task = asyncio.create_task(_contained(coro, observer))

    def ended(_: asyncio.Task[Any]) -> None:
        # A task cancelled before it ran never awaited them: close them quietly
        # (closing a finished coroutine does nothing).
        coro.close()
        inner.close()
        observer.task_ended(task)

    task.add_done_callback(ended)
    observer.track_task(task)
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

    def task_ended(self, task: asyncio.Task[Any]) -> None:
        pass

    def observe_interrupt(self, exc: BaseException) -> None:
        pass


_DETACHED = _Detached()


async def _written() -> None:
    """What the engine awaits (or runs as a task) for an event already observed."""


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
