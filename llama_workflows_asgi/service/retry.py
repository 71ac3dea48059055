"""Retrying a failed run from its last checkpoint.

A failed run's checkpoint is the one taken before the failing step's result
(see ``LiveRun.checkpoint``): the failing step is still in progress there,
with the state store as that step last saved it. Retrying writes the handler
back to ``running`` from that checkpoint, unowned, so whichever process
claims it (the one that retried, or any replica's ownership round) resumes
it: finished steps are not repeated, the failed step runs again, and the
event log goes on under the same run id with the next sequence.

Only ``failed`` runs are retried. A cancelled run was stopped on purpose and
a completed one has nothing left to do: both are refused (start a new run, or
reuse the handler id, instead).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConflictError, HandlerNotFoundError
from ..store.base import AbstractWorkflowStore, HandlerQuery, PersistentHandler, utcnow

if TYPE_CHECKING:  # the command line imports ``reopen_failed`` alone
    from ..registry import WorkflowRegistry
    from .stopping import StopSignal
    from .supervisor import Supervisor


async def reopen_failed(
    store: AbstractWorkflowStore,
    handler_id: str,
    *,
    principal_in: list[str | None] | None = None,
) -> PersistentHandler:
    """Put the failed handler back to running from its checkpoint; return it (without ctx).

    ``principal_in`` scopes the lookup (another caller's handler is not
    found). Raises ``HandlerNotFoundError``, or ``ConflictError`` if the
    handler is not failed (or changed meanwhile). It is left for an ownership
    round to claim.
    """
    rows = await store.query(HandlerQuery(handler_id_in=[handler_id], principal_in=principal_in))
    if not rows:
        raise HandlerNotFoundError(handler_id)
    row = rows[0]
    if row.status != "failed" or row.run_id is None:
        raise ConflictError(
            f"Handler '{handler_id}' is {row.status}: only failed runs can be retried"
        )
    at = utcnow()
    if not await store.reopen_handler(handler_id, run_id=row.run_id, ctx=row.ctx, at=at):
        raise ConflictError(f"Handler '{handler_id}' changed while it was being retried")
    return row.model_copy(
        update={
            "status": "running",
            "ctx": None,
            "error": None,
            "result": None,
            "updated_at": at,
            "completed_at": None,
            "owner_id": None,
            "lease_expires_at": None,
            "resume_attempts": 0,
        }
    )


class Retrier:
    """Retries failed runs of the workflows served here, and claims them at once."""

    def __init__(
        self,
        store: AbstractWorkflowStore,
        registry: WorkflowRegistry,
        supervisor: Supervisor,
        stop: StopSignal,
    ) -> None:
        self._store = store
        self._registry = registry
        self._supervisor = supervisor
        self._stop = stop

    async def retry(
        self, row: PersistentHandler, principal_in: list[str | None] | None
    ) -> PersistentHandler:
        """Reopen ``row`` (failed, of a workflow and version served here), adopt it, return it."""
        if row.status == "failed":
            entry = self._registry.find(row.workflow_name)
            if entry is None:
                raise ConflictError(
                    f"Cannot retry: workflow '{row.workflow_name}' is not registered on this server"
                )
            if row.version is not None and row.version != entry.version:
                # Reopened here, it would wait for a replica of its own version.
                raise ConflictError(
                    f"Cannot retry: the run was started by version '{row.version}' of "
                    f"'{row.workflow_name}'; this server serves '{entry.version}'"
                )
        reopened = await reopen_failed(self._store, row.handler_id, principal_in=principal_in)
        if not self._stop.draining:  # else the row is left unowned, for the next owner
            await self._supervisor.adopt([row.handler_id])
        return reopened
