"""The store interface: handler rows, the event log, the inbox and run ownership.

A store keeps JSON text and timestamps; it never imports or inspects a
workflow's Python types. The seed's three methods (``query``, ``update``,
``delete``) are kept as they were; the rest is what durable, multi-process
execution needs:

* ``create_handler`` writes a new run's row before the run is acknowledged;
* ``save_progress`` is the group-commit write of checkpoints, events and
  status, fenced by ownership so a process that lost a run cannot write to it;
* ``enqueue_event`` / ``read_inbox`` record events sent to a run, so an event
  acknowledged to a caller survives a crash before the run consumed it;
* ``heartbeat`` / ``claim_handlers`` / ``release_handlers`` implement run
  ownership, which lets several processes share one database: each owner
  renews one row of its own (its heartbeat), runs name their owner, and a run
  whose owner's heartbeat lapsed is adoptable; ``liveness`` holds the tokens
  that prove an owner dead before its heartbeat lapses.

All timestamps are timezone-aware UTC datetimes. This module is what a store
must implement; what it inherits ready-made (result classes, liveness,
notifications, the group commit of progress, two composite reads) is
``_defaults.py``'s. The store's vocabulary (rows, queries, events) is defined in
``records.py``, ``results.py`` and ``state.py`` and named here too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ._defaults import StoreDefaults
from .records import (
    DEFAULT_PRUNE_BATCH,
    HandlerCursor,
    HandlerExistsError,
    HandlerQuery,
    IdempotencyKeyExistsError,
    InboxEntry,
    PersistentHandler,
    RunProgress,
    StoredEvent,
    finished_statuses,
    prune_cutoff,
    utcnow,
)
from .results import RESULT_CLASSES, result_event
from .state import FINISHED_STATUSES, TERMINAL_STATUSES, FinishedStatus, Status

__all__ = [  # the vocabulary is defined in .records, .results and .state, and known here too
    "DEFAULT_PRUNE_BATCH",
    "FINISHED_STATUSES",
    "RESULT_CLASSES",
    "TERMINAL_STATUSES",
    "AbstractWorkflowStore",
    "FinishedStatus",
    "HandlerCursor",
    "HandlerExistsError",
    "HandlerQuery",
    "IdempotencyKeyExistsError",
    "InboxEntry",
    "PersistentHandler",
    "RunProgress",
    "Status",
    "StoredEvent",
    "finished_statuses",
    "prune_cutoff",
    "result_event",
    "utcnow",
]


class AbstractWorkflowStore(StoreDefaults, ABC):
    """Where handlers, their event logs and their inboxes live.

    ``durable`` is ``False`` for stores that forget everything when the process
    exits; the run service then skips checkpoints nobody could resume from. The
    defaults it inherits (``StoreDefaults``) may be overridden.
    """

    durable: bool = True

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Open connections and check (or bring up) the schema. Idempotent."""

    async def close(self) -> None:
        """Release connections. The store may be started again afterwards."""

    async def ping(self) -> None:
        """Check that the store is reachable; raises ``StoreUnavailableError``."""

    # -- the seed's interface ---------------------------------------------------

    @abstractmethod
    async def query(self, query: HandlerQuery) -> list[PersistentHandler]:
        """Handlers matching ``query``, in ``(started_at, handler_id)`` order."""

    @abstractmethod
    async def update(self, handler: PersistentHandler) -> None:
        """Insert or replace a handler row as given (an administrative upsert).

        If the row held another run, that run's events and inbox are dropped.
        Raises ``IdempotencyKeyExistsError`` when another handler has its key.
        """

    @abstractmethod
    async def delete(self, query: HandlerQuery) -> int:
        """Delete matching handlers with their events and inbox; return how many."""

    # -- starting runs -----------------------------------------------------------

    @abstractmethod
    async def create_handler(
        self, handler: PersistentHandler, *, replaces_run_id: str | None = None
    ) -> None:
        """Write a new run's row.

        With ``replaces_run_id`` ``None`` the handler id must be new. Otherwise the
        existing row must be terminal and still hold that run: it is overwritten
        and the old run's events and inbox are deleted. Raises
        ``HandlerExistsError`` when the id is taken (or was restarted meanwhile)
        and ``IdempotencyKeyExistsError`` when another handler has the
        idempotency key (the row being replaced does not count).
        """

    @abstractmethod
    async def get_by_idempotency_key(self, key: str) -> PersistentHandler | None:
        """The handler created with this (already scoped) idempotency key, if any."""

    # -- progress ------------------------------------------------------------------

    @abstractmethod
    async def save_progress(self, batch: Sequence[RunProgress]) -> set[str]:
        """Apply a batch atomically; return the handler ids whose item was fenced off."""

    @abstractmethod
    async def finalize_handler(
        self,
        handler_id: str,
        *,
        status: Status,
        error: str | None,
        event: StoredEvent,
        at: datetime,
    ) -> bool:
        """Finish a running handler from outside its run (cancel, unresumable run).

        Sets the terminal status and appends ``event`` after the run's last event
        (its ``sequence`` is assigned here), clears inbox and ownership. Returns
        ``False`` if the handler was not running.
        """

    @abstractmethod
    async def reopen_handler(
        self, handler_id: str, *, run_id: str, ctx: dict[str, Any] | None, at: datetime
    ) -> bool:
        """Put a failed handler back to ``running`` to be retried from ``ctx``.

        Applies only while the handler is ``failed`` and still holds ``run_id``;
        returns ``False`` otherwise. The row is left unowned (any process may
        claim it), its error, result and resume attempts are cleared, and the
        run's terminal events stop being terminal: its event log goes on with
        the next sequence, and streams end at the new attempt's final event.
        """

    # -- retention -----------------------------------------------------------------

    @abstractmethod
    async def prune(
        self,
        *,
        older_than: datetime | timedelta,
        statuses: Collection[FinishedStatus] = FINISHED_STATUSES,
        batch_size: int = DEFAULT_PRUNE_BATCH,
        dry_run: bool = False,
        exclusive: bool = False,
        pause: float = 0.0,
    ) -> int:
        """Delete finished handlers older than ``older_than``, with their events and inbox.

        A handler's age is that of its ``completed_at`` (else ``updated_at``,
        else ``started_at``); ``older_than`` is an age (``timedelta``) or an
        aware moment. Only ``statuses`` are considered, never running handlers
        (``ValueError``). Rows go in batches of ``batch_size``, one short
        transaction each. ``dry_run`` deletes nothing and returns how many
        would go. ``exclusive`` (background retention) gives way to another
        process pruning the same database at the moment: it then stops early.
        ``pause`` seconds pass between two batches, leaving the database to the
        runs' own writes. Returns how many handlers were deleted.
        """

    # -- event log -----------------------------------------------------------------

    @abstractmethod
    async def read_events(
        self, run_id: str, *, after_sequence: int = -1, limit: int = 1000
    ) -> list[StoredEvent]:
        """Events of a run with a sequence above ``after_sequence``, oldest first."""

    @abstractmethod
    async def last_sequences(self, run_ids: Sequence[str]) -> dict[str, int]:
        """The highest event sequence of each run that has events."""

    # -- inbox ---------------------------------------------------------------------

    @abstractmethod
    async def enqueue_event(
        self, handler_id: str, run_id: str, payload: str, step: str | None, at: datetime
    ) -> int | None:
        """Record an event for a running handler; ``None`` if it is not running ``run_id``."""

    @abstractmethod
    async def read_inbox(self, handler_ids: Sequence[str]) -> list[InboxEntry]:
        """Pending inbox entries of these handlers, oldest first."""

    # -- ownership -----------------------------------------------------------------

    @abstractmethod
    async def heartbeat(self, owner_id: str, *, now: datetime, expires_at: datetime) -> set[str]:
        """Record that ``owner_id`` is alive until ``expires_at``; return the runs it owns.

        One owner row is written (created or renewed, with the liveness token's
        kind and key), whatever the number of runs; rows of owners whose
        heartbeat lapsed before ``now`` and that own no running handler are
        deleted. Returns the ids of the running handlers ``owner_id`` owns.
        """

    @abstractmethod
    async def claim_handlers(
        self,
        owner_id: str,
        *,
        now: datetime,
        lease_until: datetime,
        dead_owners: Sequence[str] = (),
        handler_ids: Sequence[str] | None = None,
        limit: int = 100,
        versions: Mapping[str, Sequence[str]] | None = None,
    ) -> list[PersistentHandler]:
        """Take ownership of running handlers nobody live owns, in one batch.

        A handler is claimable when it is running and either unowned, owned by
        an owner with no heartbeat alive at ``now`` (its row expired before
        ``now``, or it has none), or owned by one of ``dead_owners``; and it is
        not idle (released while waiting for input) unless its inbox holds an
        event. With ``handler_ids`` only those are considered. With
        ``versions`` (workflow name to the versions this process serves) only
        runs of a served name and version are, and those of a served name
        recorded without a version. The oldest (by ``started_at``) go first, at
        most ``limit``. When anything is claimed, ``owner_id``'s heartbeat is
        renewed to ``lease_until`` in the same transaction (claimed runs are
        never born adoptable) and their ``lease_expires_at`` is set to it.
        Claiming from an owner that did not release the run counts a resume
        attempt. Returns the claimed rows with their checkpoints and
        ``previous_owner_id``.
        """

    @abstractmethod
    async def release_handlers(self, owner_id: str, handler_ids: Sequence[str] | None) -> None:
        """Give up ownership (of ``handler_ids`` or of everything) without changing status.

        Releasing everything (``None``) also deletes ``owner_id``'s heartbeat row.
        """

    @abstractmethod
    async def list_owners(self) -> set[str]:
        """The owners that have a heartbeat row: those whose liveness is worth probing.

        An owner without one (or with a lapsed one) needs no probe: its runs
        are adoptable already.
        """
