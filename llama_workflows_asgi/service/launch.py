"""Putting a registered live run onto the engine, and failing a run that cannot run.

Shared by starting and resuming: the run is live here already (see
``live_runs``); launching builds its context from a checkpoint (or none),
starts the engine and watches it, so that an engine that stops without a
terminal event still ends its run as failed.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from workflows import Context
from workflows.events import Event, StartEvent, WorkflowFailedEvent

from .. import _engine, codec
from ..store.base import AbstractWorkflowStore, StoredEvent, utcnow
from .live import LiveRun
from .live_runs import LiveRuns
from .runtime import DurableRuntime

logger = logging.getLogger(__name__)


class Launcher:
    """Starts the engine of live runs and writes the failure of those that cannot start."""

    def __init__(
        self, store: AbstractWorkflowStore, runtime: DurableRuntime, live: LiveRuns
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._live = live

    async def launch_or_fail(
        self, live: LiveRun, ctx: dict[str, Any] | None, start: StartEvent | None
    ) -> bool:
        """Launch ``live``; if the engine refuses it, fail it alone and return ``False``."""
        try:
            self._launch(live, ctx, start)
        except Exception as exc:
            live.abort()
            reason = f"Cannot resume: {codec.readable_error(exc)}"
            live.telemetry.ended("failed", reason)
            self._live.unregister(live)
            await self.give_up(live.handler_id, reason)
            return False
        return True

    async def give_up(self, handler_id: str, reason: str) -> None:
        """Write ``handler_id`` as failed for ``reason`` (its run will not run here)."""
        fields = {"handler_id": handler_id, "run_state": "failed", "error": reason}
        logger.error("handler %s failed: %s", handler_id, reason, extra=fields)
        failure = WorkflowFailedEvent(step_name="", exception=RuntimeError(reason))
        await self._store.finalize_handler(
            handler_id, status="failed", error=reason, event=stored_event(failure), at=utcnow()
        )

    def _launch(self, live: LiveRun, ctx: dict[str, Any] | None, start: StartEvent | None) -> None:
        workflow = live.workflow.workflow
        serializer = self._runtime.get_serializer(workflow)
        context = None if ctx is None else Context.from_dict(workflow, ctx, serializer=serializer)
        loop = self._runtime.observe(live.run_id, live)
        with live.telemetry.executing():  # steps inherit its tags and span
            handler = workflow.run(ctx=context, start_event=start, run_id=live.run_id)
        live.attach(handler, self._runtime.get_external_adapter(live.run_id), loop)
        # A callback, not a task awaiting the result: one task fewer per run.
        _engine.when_done(handler, functools.partial(self._ended, live))

    def _ended(self, live: LiveRun, error: BaseException | None) -> None:
        """Fail a run whose engine stopped without a terminal event (and was not released)."""
        if live.outcome is None and not live.releasing and self._live.is_current(live):
            reason = (
                f"{type(error).__name__}: {error}" if error else "the run stopped without a result"
            )
            live.observe_event(WorkflowFailedEvent(step_name="", exception=RuntimeError(reason)))


def stored_event(event: Event) -> StoredEvent:
    """``event`` as a row of the event log (the store numbers it)."""
    encoded = codec.encode(event)
    return StoredEvent(-1, encoded.payload, encoded.event_type, encoded.internal, encoded.terminal)
