"""Resuming claimed runs: each row an ownership round claimed becomes a live run again.

A run resumes from its last checkpoint (or, with none taken mid-run, from its
recorded start event), with the events recorded for it meanwhile delivered
once it runs. A run that cannot resume here (its workflow is not registered,
it has no run, it crashed its process too often, its checkpoint does not
load) is written as failed, alone. Once a graceful stop began, what a claim
took goes back to the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workflows.events import StartEvent

from .. import codec
from ..registry import RegisteredWorkflow, WorkflowRegistry
from ..store.base import AbstractWorkflowStore, InboxEntry, PersistentHandler
from ..telemetry import Telemetry
from .config import ServiceConfig
from .inbox import deliver_entry
from .launch import Launcher
from .live import LiveRun
from .live_runs import LiveRuns
from .ownership import Owner
from .stopping import StopSignal


class Recovery:
    """Resumes the rows the supervisor claimed for this process."""

    def __init__(
        self,
        store: AbstractWorkflowStore,
        owner: Owner,
        config: ServiceConfig,
        registry: WorkflowRegistry,
        telemetry: Telemetry,
        *,
        live: LiveRuns,
        launcher: Launcher,
        stop: StopSignal,
    ) -> None:
        self._store = store
        self._owner = owner
        self._config = config
        self._registry = registry
        self._telemetry = telemetry
        self._live = live
        self._launcher = launcher
        self._stop = stop

    async def resume_batch(self, rows: Sequence[PersistentHandler]) -> None:
        """Resume ``rows`` (claimed by this process), each failing alone."""
        if not rows:
            return
        run_ids = [r.run_id for r in rows if r.run_id is not None]
        sequences = await self._store.last_sequences(run_ids)
        inbox = await self._store.read_inbox([r.handler_id for r in rows])
        for index, row in enumerate(rows):
            if self._stop.draining:
                # Stopping began: the final release may already be written,
                # so what this claim took goes back to the pool now.
                left = [r.handler_id for r in rows[index:] if r.handler_id not in self._live]
                await self._store.release_handlers(self._owner.id, left)
                return
            if row.handler_id in self._live:
                continue  # already live here: nothing to resume
            problem = self._unresumable(row)
            if problem is not None:
                await self._launcher.give_up(row.handler_id, problem)
                continue
            entries = [e for e in inbox if e.handler_id == row.handler_id]
            await self._resume_one(row, sequences, entries)

    async def _resume_one(
        self, row: PersistentHandler, sequences: dict[str, int], inbox: list[InboxEntry]
    ) -> None:
        """Resume one claimed row; one that cannot be resumed fails alone."""
        previous_owner = row.previous_owner_id
        row = row.model_copy(update={"previous_owner_id": None})  # claim bookkeeping only
        assert row.run_id is not None
        live: LiveRun | None = None
        try:
            workflow = self._registry.get(row.workflow_name)
            ctx, start = _resume_inputs(row, workflow)
            live = self._live.register(row, workflow, sequences.get(row.run_id, -1) + 1)
            live.telemetry = self._telemetry.resumed(row, previous_owner=previous_owner)
        except Exception as exc:
            if live is not None:
                self._live.unregister(live)
            reason = f"Cannot resume: {codec.readable_error(exc)}"
            await self._launcher.give_up(row.handler_id, reason)
            return
        if await self._launcher.launch_or_fail(live, ctx, start):
            for entry in inbox:
                if entry.run_id == row.run_id:
                    deliver_entry(live, entry)

    def _unresumable(self, row: PersistentHandler) -> str | None:
        if self._registry.find(row.workflow_name) is None:
            return f"Cannot resume: workflow '{row.workflow_name}' is not registered on this server"
        if row.run_id is None:
            return "Cannot resume: the handler has no run"
        if row.resume_attempts > self._config.max_resume_attempts:
            attempts = self._config.max_resume_attempts
            return (
                f"Gave up resuming after {attempts} attempts without progress "
                "(the run kept crashing its process)"
            )
        return None


def _resume_inputs(
    row: PersistentHandler, entry: RegisteredWorkflow
) -> tuple[dict[str, Any] | None, StartEvent | None]:
    if row.ctx is not None and row.ctx.get("is_running"):
        return row.ctx, None
    # Nothing checkpointed mid-run yet: start over from the recorded start event.
    start = entry.events.decode_start(row.start_event or {})
    return row.ctx, start
