"""The rooms of one run service, built once and wired to each other.

Each room is given the objects it works with and nothing more (no callbacks
into the facade); :func:`build_rooms` is the one place that knows who needs
whom. The facade (``service.py``) and the lifecycle (``lifecycle.py``) then
call the rooms by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import WorkflowRegistry
from ..store.base import AbstractWorkflowStore
from ..telemetry import Telemetry
from .cancelling import Canceller
from .config import ServiceConfig
from .inbox import Inbox
from .launch import Launcher
from .live_runs import LiveRuns
from .ownership import Owner
from .reading import EventReader
from .recovery import Recovery
from .retention import RetentionTask
from .retry import Retrier
from .runtime import DurableRuntime
from .shutdown import Shutdown
from .starting import Starter
from .stopping import StopSignal
from .supervisor import Supervisor
from .tail import SharedTail
from .waiting import Waiter


@dataclass(frozen=True)
class Rooms:
    """Every room of one service (see docs/architecture.md, "room by room")."""

    stop: StopSignal
    live: LiveRuns
    tail: SharedTail
    reader: EventReader
    launcher: Launcher
    starter: Starter
    recovery: Recovery
    supervisor: Supervisor
    inbox: Inbox
    retention: RetentionTask
    waiter: Waiter
    canceller: Canceller
    retrier: Retrier
    shutdown: Shutdown


@dataclass(frozen=True)
class Basis:
    """What every service has before its rooms: the store, who it is, what it runs."""

    store: AbstractWorkflowStore
    owner: Owner
    config: ServiceConfig
    registry: WorkflowRegistry
    runtime: DurableRuntime
    telemetry: Telemetry
    scoped: bool


def build_rooms(basis: Basis) -> Rooms:
    """The rooms of a service on ``basis``, each given what it needs; the gauges watch them."""
    store, owner, config = basis.store, basis.owner, basis.config
    stop = StopSignal()
    live = LiveRuns(store, owner, config, basis.runtime)
    tail = SharedTail(store, config.stream_poll_interval)
    launcher = Launcher(store, basis.runtime, live)
    recovery, supervisor = _ownership(basis, live, launcher, stop)
    retention = RetentionTask(store, config)
    basis.telemetry.watch(live, live.writer, supervisor)
    return Rooms(
        stop=stop,
        live=live,
        tail=tail,
        reader=EventReader(store, live, config, stop, tail),
        launcher=launcher,
        starter=_starter(basis, live, launcher, stop),
        recovery=recovery,
        supervisor=supervisor,
        inbox=Inbox(store, basis.runtime, live, supervisor, stop),
        retention=retention,
        waiter=Waiter(store, live, config, stop),
        canceller=Canceller(store, live),
        retrier=Retrier(store, basis.registry, supervisor, stop),
        shutdown=Shutdown(
            store,
            owner,
            config,
            live=live,
            supervisor=supervisor,
            retention=retention,
            tail=tail,
        ),
    )


def _starter(basis: Basis, live: LiveRuns, launcher: Launcher, stop: StopSignal) -> Starter:
    return Starter(
        basis.store,
        basis.owner,
        basis.config,
        basis.runtime,
        basis.telemetry,
        live=live,
        launcher=launcher,
        stop=stop,
        scoped=basis.scoped,
    )


def _ownership(
    basis: Basis, live: LiveRuns, launcher: Launcher, stop: StopSignal
) -> tuple[Recovery, Supervisor]:
    """The ownership rounds and the room that turns the rows they claim into live runs."""
    recovery = Recovery(
        basis.store,
        basis.owner,
        basis.config,
        basis.registry,
        basis.telemetry,
        live=live,
        launcher=launcher,
        stop=stop,
    )
    supervisor = Supervisor(
        basis.store,
        basis.owner,
        basis.config,
        live=live,
        recovery=recovery,
        registry=basis.registry,
        count_queued=basis.telemetry.enabled,  # the queued gauge is its only reader
    )
    return recovery, supervisor
