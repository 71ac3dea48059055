"""The store's vocabulary: handler rows, listing queries and positions, events, inbox entries,
the progress items of a group commit, what a prune accepts, and the conflicts a write reports.

Plain data, shared by every layer above the store; the interface that reads and
writes them is ``base.py`` (which names them all too).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from workflows.events import StopEvent

from ..errors import ConflictError
from .results import RESULT_CLASSES, result_envelope, result_event
from .state import FINISHED_STATUSES, TERMINAL_STATUSES, FinishedStatus, Status


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


DEFAULT_PRUNE_BATCH = 500
"""Handlers deleted per transaction by :meth:`AbstractWorkflowStore.prune`."""


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
        return None if self.result is None else result_envelope(self.result)


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
