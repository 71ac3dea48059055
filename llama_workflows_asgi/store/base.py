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

All timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import contextlib
import weakref
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from workflows.events import StopEvent

from .. import codec
from ..errors import ConflictError
from ._batch import GroupCommit, Outcome, Poke, Source, no_transaction
from .liveness import Liveness, UnprovenLiveness
from .notifications import Notifications
from .state import FINISHED_STATUSES, TERMINAL_STATUSES, FinishedStatus, Status

__all__ = [  # the statuses are defined in .state, and known here by their usual names
    "FINISHED_STATUSES",
    "TERMINAL_STATUSES",
    "FinishedStatus",
    "Status",
]

DEFAULT_PRUNE_BATCH = 500
"""Handlers deleted per transaction by :meth:`AbstractWorkflowStore.prune`."""


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def prune_cutoff(older_than: datetime | timedelta, now: datetime | None = None) -> datetime:
    """The moment before which finished runs go: ``older_than`` ago, or that datetime."""
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise ValueError("older_than must not be negative")
        return (now or utcnow()) - older_than
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    return older_than.astimezone(timezone.utc)


def finished_statuses(statuses: Collection[str]) -> list[FinishedStatus]:
    """``statuses`` checked to be finished ones (sorted); raises ``ValueError`` otherwise."""
    unknown = sorted(set(statuses) - set(FINISHED_STATUSES))
    if unknown:
        raise ValueError(
            f"Cannot prune status {unknown[0]!r}: only completed, failed and cancelled runs"
        )
    return [s for s in FINISHED_STATUSES if s in statuses]


class PersistentHandler(BaseModel):
    """One handler: the durable record of a workflow run.

    ``ctx`` is the run's latest checkpoint (a ``Context.to_dict()`` payload) and
    ``result`` the StopEvent the run completed with: an instance of the
    workflow's own StopEvent class when the store knows it (see
    ``AbstractWorkflowStore.result_classes``), a plain ``StopEvent`` otherwise.
    It may be given as a StopEvent, as the wire envelope the store keeps
    (``value``, ``qualified_name``, ``type``, ``types``), as the engine's
    serializer format (``__is_pydantic``, ``value``, ``qualified_name``) or as
    a legacy plain value (which becomes ``StopEvent(result=value)``). The
    fields after ``completed_at`` are the server's bookkeeping: the start
    event, who started the run, its owner and idempotency data
    (``lease_expires_at`` is the owner's heartbeat expiry when the run was
    claimed or created: informative, never renewed; the owner's heartbeat
    decides whether the run may be adopted), and the version of the workflow
    that started it (``None`` on rows written before versions were recorded).
    ``previous_owner_id`` is not stored: it is set on the rows
    ``claim_handlers`` returns, naming who owned the run before the claim
    (``None`` if nobody did).
    """

    model_config = ConfigDict(extra="forbid")

    handler_id: str
    workflow_name: str
    status: Status
    run_id: str | None = None
    ctx: dict[str, Any] | None = None
    result: StopEvent | None = None
    error: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    start_event: dict[str, Any] | None = None
    principal: str | None = None
    idle_since: datetime | None = None
    owner_id: str | None = None
    lease_expires_at: datetime | None = None
    resume_attempts: int = 0
    idempotency_key: str | None = None
    request_hash: str | None = None
    version: str | None = None
    previous_owner_id: str | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the run has finished (completed, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES

    @field_validator("result", mode="before")
    @classmethod
    def _result_event(cls, data: Any, info: ValidationInfo) -> StopEvent | None:
        classes = (info.context or {}).get(RESULT_CLASSES)
        return result_event(data, classes)

    @field_serializer("result")
    def _dump_result(self, result: StopEvent | None) -> dict[str, Any] | None:
        return self.result_envelope()

    def with_stored_result(
        self, stored: dict[str, Any] | None, classes: Mapping[str, type[StopEvent]]
    ) -> PersistentHandler:
        """A copy whose result is read from ``stored`` (a result as a store keeps it)."""
        return self.model_copy(update={"result": result_event(stored, classes)})

    def result_envelope(self) -> dict[str, Any] | None:
        """The result as the wire envelope (what the store keeps and the API shows)."""
        if self.result is None:
            return None
        stored = _STORED_ENVELOPES.get(id(self.result))
        return codec.envelope(self.result) if stored is None else stored


RESULT_CLASSES = "result_classes"
"""Validation context key: StopEvent classes by qualified name, to rebuild results with."""

_WIRE_KEYS = frozenset({"value", "qualified_name", "type", "types"})


def _is_envelope(data: Any) -> bool:
    if not isinstance(data, dict) or "value" not in data or not set(data) <= _WIRE_KEYS:
        return False
    return isinstance(data["value"], dict) and bool({"type", "qualified_name"} & set(data))


def result_event(data: Any, classes: Mapping[str, type[StopEvent]] | None) -> StopEvent | None:
    """A handler result as a StopEvent (see ``PersistentHandler``); never imports anything."""
    if data is None or isinstance(data, StopEvent):
        return data
    marked = isinstance(data, dict) and data.get("__is_pydantic") is True
    if not (marked or _is_envelope(data)):
        return StopEvent(result=data)
    value = data.get("value") if isinstance(data.get("value"), dict) else {}
    cls = _result_class(data, classes or {})
    event: StopEvent | None = None
    if cls is not None:
        with contextlib.suppress(ValidationError):
            event = cls.model_validate(value)
    if event is None:
        # A class this process does not serve: its fields, as a plain result.
        event = StopEvent(result=value)
    if _is_envelope(data):
        _remember_envelope(event, data)
    return event


_STORED_ENVELOPES: dict[int, dict[str, Any]] = {}
"""Stored envelopes of results read back, by ``id`` of the event read.

A result is shown exactly as it was stored (a class this process does not
serve keeps its own name), without dumping it again; an entry lives as long as
its event.
"""


def _remember_envelope(event: StopEvent, stored: dict[str, Any]) -> None:
    _STORED_ENVELOPES[id(event)] = stored
    weakref.finalize(event, _STORED_ENVELOPES.pop, id(event), None)


def _result_class(
    data: dict[str, Any], classes: Mapping[str, type[StopEvent]]
) -> type[StopEvent] | None:
    name = data.get("qualified_name")
    if name == codec.qualified_name(StopEvent) or (not name and data.get("type") == "StopEvent"):
        return StopEvent
    found = classes.get(name) if isinstance(name, str) else None
    if found is None and isinstance(data.get("type"), str) and not name:
        found = next((c for c in classes.values() if c.__name__ == data["type"]), None)
    return found


@dataclass(frozen=True)
class HandlerCursor:
    """A keyset position in the handler listing: the last row of a page.

    Callers hand it out as an opaque token; the HTTP edge owns that encoding
    (``api.params.encode_cursor``).
    """

    started_at: datetime
    handler_id: str


class HandlerQuery(BaseModel):
    """Which handlers to read or delete.

    Each ``*_in`` filter is ``None`` for "no filter"; an empty list matches
    nothing. Rows come ordered by ``(started_at, handler_id)``, ascending unless
    ``descending``; ``after`` continues a listing after a given row (keyset
    pagination) and ``limit`` caps the page. ``load_ctx=False`` skips reading
    the checkpoint column, which listings do not need.
    """

    model_config = ConfigDict(extra="forbid")

    handler_id_in: list[str] | None = None
    workflow_name_in: list[str] | None = None
    status_in: list[Status] | None = None
    principal_in: list[str | None] | None = None
    version_in: list[str | None] | None = None
    descending: bool = False
    after: HandlerCursor | None = None
    limit: int | None = Field(default=None, ge=1)
    load_ctx: bool = True


@dataclass(frozen=True)
class StoredEvent:
    """One entry of a run's event log.

    ``payload`` is the event's wire envelope as compact JSON (with its
    ``qualified_name``), exactly as it is streamed. ``internal`` marks engine
    bookkeeping events hidden from default streams; ``terminal`` marks the
    run's final StopEvent-typed event.
    """

    sequence: int
    payload: str
    event_type: str
    internal: bool = False
    terminal: bool = False
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class InboxEntry:
    """An event sent into a run and recorded before the sender was answered."""

    id: int
    handler_id: str
    run_id: str
    payload: str
    step: str | None
    created_at: datetime


@dataclass
class RunProgress:
    """What one run has done since its last write: one item of a group commit.

    The write applies only while ``owner_id`` still owns the handler, the
    handler still runs ``run_id`` and its status is ``running``; otherwise the
    item is reported back as lost and nothing of it is written.

    ``ctx`` replaces the checkpoint when not ``None``. ``events`` are appended
    to the run's log and ``consumed_inbox`` removed from its inbox, in the same
    transaction. A terminal ``status`` finishes the handler with ``result`` or
    ``error`` and clears its inbox and ownership. ``release`` gives up
    ownership of a run that keeps running (idle release, shutdown).
    """

    handler_id: str
    run_id: str
    owner_id: str | None
    updated_at: datetime
    ctx: str | None = None
    events: list[StoredEvent] = field(default_factory=list)
    consumed_inbox: list[int] = field(default_factory=list)
    status: Status = "running"
    result: str | None = None
    error: str | None = None
    idle_since: datetime | None = None
    reset_attempts: bool = False
    release: bool = False


class AbstractWorkflowStore(ABC):
    """Where handlers, their event logs and their inboxes live.

    ``durable`` is ``False`` for stores that forget everything when the process
    exits; the run service then skips checkpoints nobody could resume from.
    """

    durable: bool = True

    @property
    def result_classes(self) -> dict[str, type[StopEvent]]:
        """StopEvent subclasses results are rebuilt as, by qualified name.

        The run service adds its workflows' stop classes; a result of a class
        not listed reads back as a plain ``StopEvent`` holding its fields.
        """
        classes: dict[str, type[StopEvent]] | None = self.__dict__.get("_result_classes")
        if classes is None:
            classes = self.__dict__["_result_classes"] = {}
        return classes

    @property
    def liveness(self) -> Liveness:
        """The owners' liveness tokens (see ``store.liveness``).

        The default proves no owner dead: their runs wait for their heartbeats to lapse.
        """
        return _UNPROVEN

    @property
    def notifications(self) -> Notifications:
        """Wakeups after committed writes (see ``store.notifications``).

        The default reaches listeners of this process only; other processes
        learn of a write by polling.
        """
        hub: Notifications | None = self.__dict__.get("_notifications")
        if hub is None:
            hub = self.__dict__["_notifications"] = Notifications()
        return hub

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections and check (or bring up) the schema. Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The store may be started again afterwards."""

    async def ping(self) -> None:  # noqa: B027 - optional hook
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

    def progress_feed(self, source: Source[RunProgress, bool]) -> Poke:
        """Attach the run service's dirty runs: the store's group commit pulls them.

        Each time the store's writer forms a batch it takes ``source``'s
        progress (one item per run) and reports each item as written (``True``),
        fenced off (``False``) or refused alone (an exception); an outage gives
        the items back (``Source.kept``) and the writer pulls again after a
        backoff. This default writes a batch with one :meth:`save_progress`
        call, on a writer of its own (``store._batch``).
        """
        writer: GroupCommit[None] | None = self.__dict__.get("_progress_writer")
        if writer is None:
            writer = self.__dict__["_progress_writer"] = GroupCommit(no_transaction)
        return writer.feed(self._save_batch, source)

    async def close_progress_writer(self) -> None:
        """Stop the writer :meth:`progress_feed` started (a store's ``close`` calls this)."""
        writer: GroupCommit[None] | None = self.__dict__.pop("_progress_writer", None)
        if writer is not None:
            await writer.aclose()

    async def _save_batch(self, _: None, batch: list[RunProgress]) -> list[Outcome[bool]]:
        lost = await self.save_progress(batch)
        return [item.handler_id not in lost for item in batch]

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

    async def read_new_events(
        self, positions: Mapping[str, int], *, limit: int = 1000
    ) -> dict[str, list[StoredEvent]]:
        """Events of several runs, each after its own sequence in ``positions``.

        At most ``limit`` events in all, oldest first per run; a run may get only
        the first of its new events when the limit is reached. Runs without new
        events are left out. Stores override this with one statement.
        """
        found: dict[str, list[StoredEvent]] = {}
        for run_id, after in positions.items():
            if limit <= 0:
                break
            new = await self.read_events(run_id, after_sequence=after, limit=limit)
            if new:
                found[run_id] = new
                limit -= len(new)
        return found

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

    async def count_queued(self) -> dict[str, int]:
        """Running handlers nobody owns that are not idle (waiting for a replica), by workflow.

        Stores should answer in one statement; this default reads the rows.
        """
        counts: dict[str, int] = {}
        for row in await self.query(HandlerQuery(status_in=["running"], load_ctx=False)):
            if row.owner_id is None and row.idle_since is None:
                counts[row.workflow_name] = counts.get(row.workflow_name, 0) + 1
        return counts


_UNPROVEN = UnprovenLiveness()


class HandlerExistsError(ConflictError):
    """The handler id is already in use."""

    def __init__(self, handler_id: str) -> None:
        super().__init__(f"Handler '{handler_id}' already exists")
        self.handler_id = handler_id


class IdempotencyKeyExistsError(ConflictError):
    """Another handler was already created with this idempotency key."""

    def __init__(self, key: str) -> None:
        super().__init__("Idempotency key already used")
        self.key = key
