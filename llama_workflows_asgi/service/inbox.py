"""Sending events into runs: checked, recorded durably, then delivered where the run lives.

An event is recorded in the store's inbox before it is delivered, so it
reaches its run even if this process dies right after. A run live here gets
it at once; a run live nowhere is adopted (and gets it when it resumes); a
run live elsewhere gets it from that process's next ownership round.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from workflows.events import Event, StartEvent, StopEvent

from .._engine import step_names
from .._json import dumps, load_object
from ..errors import BadEventError, ConflictError
from ..registry import RegisteredWorkflow
from ..store.base import AbstractWorkflowStore, InboxEntry, PersistentHandler, utcnow
from .inputs import storable_envelope
from .live import LiveRun
from .live_runs import LiveRuns
from .runtime import DurableRuntime
from .stopping import StopSignal

if TYPE_CHECKING:
    from .supervisor import Supervisor

logger = logging.getLogger(__name__)


class Inbox:
    """Records events sent to running handlers and delivers them."""

    def __init__(
        self,
        store: AbstractWorkflowStore,
        runtime: DurableRuntime,
        live: LiveRuns,
        supervisor: Supervisor,
        stop: StopSignal,
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._live = live
        self._supervisor = supervisor
        self._stop = stop

    async def send(
        self,
        row: PersistentHandler,
        entry: RegisteredWorkflow,
        event: Event | Any,
        step: str | None,
    ) -> None:
        """Record ``event`` (an Event or an envelope payload) for ``row``'s run and deliver it."""
        assert row.run_id is not None  # the caller refused a finished handler
        decoded = event if isinstance(event, Event) else entry.events.decode(event)
        _check_sendable(decoded)
        _check_step(entry, step, decoded)
        serializer = self._runtime.get_serializer(entry.workflow)
        payload = dumps(storable_envelope(entry, decoded, serializer, start=False))
        handler_id = row.handler_id
        inbox_id = await self._store.enqueue_event(handler_id, row.run_id, payload, step, utcnow())
        if inbox_id is None:
            raise ConflictError("Workflow already completed")
        attached = self._live.attached(handler_id, row.run_id)
        if attached is not None:
            attached.deliver(inbox_id, decoded, step)
            return
        live = self._live.get(handler_id)
        if live is not None:
            await live.finished.wait()
        if not self._stop.draining:  # else the row is left unowned, for the next owner
            await self._supervisor.adopt([handler_id])


def deliver_entry(live: LiveRun, entry: InboxEntry) -> None:
    """Deliver a recorded inbox entry to ``live``; one that does not decode is dropped."""
    try:
        event = live.workflow.events.decode(load_object(entry.payload))  # written by us
        live.deliver(entry.id, event, entry.step)
    except Exception as exc:
        logger.warning("dropping undeliverable event %s for %s: %s", entry.id, live.handler_id, exc)
        live.drop_inbox_entry(entry.id)


def _check_sendable(event: Event) -> None:
    if isinstance(event, StopEvent):
        raise BadEventError(
            f"A {type(event).__name__} cannot be sent into a run: a run's outcome is its own"
        )
    if isinstance(event, StartEvent):
        raise BadEventError(
            f"A {type(event).__name__} cannot be sent into a running run: it has already started"
        )


def _check_step(entry: RegisteredWorkflow, step: str | None, event: Event) -> None:
    """Refuse a target step the workflow lacks.

    Whether the step takes the event is not checked against its signature: a
    step may wait for it with ``ctx.wait_for_event`` instead.
    """
    if step is None:
        return
    if step not in step_names(entry.workflow):
        raise BadEventError(f"Step {step} does not exist")
