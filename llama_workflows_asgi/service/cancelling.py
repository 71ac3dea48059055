"""Cancelling a run, and deleting a handler (``purge``).

A run live here is cancelled through its engine, which writes the
cancellation like any outcome; a run owned elsewhere (or by nobody) is
finalized in the store directly, and its owner's next ownership round sees it
cancelled and stops it. A run that finished meanwhile is a conflict, never
overwritten.
"""

from __future__ import annotations

from typing import Literal

from workflows.events import WorkflowCancelledEvent

from ..errors import ConflictError, HandlerNotFoundError
from ..store.base import AbstractWorkflowStore, HandlerQuery, PersistentHandler, utcnow
from .launch import stored_event
from .live_runs import LiveRuns


class Canceller:
    """Cancels running handlers, live here or not, and deletes handlers."""

    def __init__(self, store: AbstractWorkflowStore, live: LiveRuns) -> None:
        self._store = store
        self._live = live

    async def cancel(
        self, row: PersistentHandler, *, purge: bool
    ) -> Literal["cancelled", "deleted"]:
        """Cancel ``row``'s run if it is running; with ``purge`` delete it, finished or not."""
        if not row.is_terminal:
            await self._cancel_running(row)
        elif not purge:
            raise ConflictError(f"Handler '{row.handler_id}' is already {row.status}")
        if not purge:
            return "cancelled"
        if not await self._store.delete(HandlerQuery(handler_id_in=[row.handler_id])):
            raise HandlerNotFoundError(row.handler_id)
        if row.run_id is not None:
            self._live.ended.forget(row.run_id)  # no stream is fed a deleted log from memory
        return "deleted"

    async def _cancel_running(self, row: PersistentHandler) -> None:
        live = self._live.attached(row.handler_id, row.run_id)
        if live is not None:
            assert live.handler is not None
            if live.outcome is None:
                await live.handler.cancel_run()
            await live.finished.wait()
            if live.outcome is not None and live.outcome.status == "cancelled":
                return
            raise ConflictError(f"Handler '{row.handler_id}' already finished")
        cancelled = stored_event(WorkflowCancelledEvent())
        if not await self._store.finalize_handler(
            row.handler_id, status="cancelled", error=None, event=cancelled, at=utcnow()
        ):
            raise ConflictError(f"Handler '{row.handler_id}' already finished")
