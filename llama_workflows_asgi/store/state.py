"""The run state machine: which writes a handler row admits, and what each one changes.

Pure: no I/O and no store. Every store asks it the same two questions about a
write: does the row, as it stands, admit it (:meth:`Requirement.admits`; the
SQL store turns the same :class:`Requirement` into WHERE clauses), and which
columns does it set (:attr:`Transition.sets`)? The columns set never depend on
the row's previous values, so a SQL store may write them in one conditional
``UPDATE``.

::

    (new row) ──create──► running ──progress (fenced)─────────► running
                            │  ├───progress (fenced, terminal)─► completed | failed | cancelled
                            │  └───finalize (any owner)────────► failed | cancelled
    failed ──reopen (same run)──► running, unowned
    completed | failed | cancelled ──replace (same run)──► a new run's row

A *fenced* write comes from the process that owns the run: it applies only
while the row still runs that run, owned by that writer (see
:func:`fence`), so a process that lost a run can never write to it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict, get_args

if TYPE_CHECKING:
    from .base import RunProgress

FinishedStatus = Literal["completed", "failed", "cancelled"]
"""The statuses of a finished run: what retention may delete."""

Status = Literal["running", FinishedStatus]
"""A handler's status. Everything but ``running`` is terminal."""

STATUSES: tuple[Status, ...] = get_args(Status)
"""Every status, ``running`` first."""

FINISHED_STATUSES: tuple[FinishedStatus, ...] = get_args(FinishedStatus)
"""The terminal statuses, in the order listings and commands show them."""

TERMINAL_STATUSES: frozenset[Status] = frozenset(FINISHED_STATUSES)
"""The terminal statuses, as a set."""

RUNNING: frozenset[Status] = frozenset({"running"})


class RowState(Protocol):
    """What a requirement looks at in a handler row."""

    @property
    def status(self) -> str: ...

    @property
    def run_id(self) -> str | None: ...

    @property
    def owner_id(self) -> str | None: ...


@dataclass(frozen=True)
class Requirement:
    """What a handler row must hold for a write to apply to it.

    Its status must be one of ``statuses`` and it must hold a run: ``run_id``
    when given, any run otherwise. With ``fenced`` its owner must also be
    ``owner_id`` (``None``: the row must be unowned).
    """

    statuses: frozenset[Status]
    run_id: str | None = None
    fenced: bool = False
    owner_id: str | None = None

    def admits(self, row: RowState | None) -> bool:
        """Whether ``row`` (``None``: no such row) admits the write."""
        if row is None or row.status not in self.statuses or row.run_id is None:
            return False
        if self.run_id is not None and row.run_id != self.run_id:
            return False
        return not self.fenced or row.owner_id == self.owner_id


class RowChanges(TypedDict, total=False):
    """Columns of a handler row a transition writes; JSON payloads as text.

    A key that is absent leaves its column as it is; ``ctx`` present and
    ``None`` clears the checkpoint.
    """

    status: Status
    ctx: str | None
    result: str | None
    error: str | None
    updated_at: datetime
    completed_at: datetime | None
    idle_since: datetime | None
    owner_id: None
    lease_expires_at: None
    resume_attempts: int


@dataclass(frozen=True)
class Transition:
    """A write as the state machine sees it: its requirement and the columns it sets.

    ``ends_run`` marks a transition to a terminal status: the run's inbox goes
    with it (nobody will consume those events any more).
    """

    requires: Requirement
    sets: RowChanges
    ends_run: bool = False


UNOWNED: RowChanges = {"owner_id": None, "lease_expires_at": None}
"""What releasing ownership sets."""


def finished(status: Status, *, result: str | None, error: str | None, at: datetime) -> RowChanges:
    """The terminal transition's columns: the outcome, the end time, no owner, not idle."""
    return {
        "status": status,
        "result": result,
        "error": error,
        "updated_at": at,
        "completed_at": at,
        "idle_since": None,
        **UNOWNED,
    }


def fence(owner_id: str | None, run_id: str) -> Requirement:
    """What a write from a run's own writer needs: the row runs ``run_id``, owned by it."""
    return Requirement(RUNNING, run_id, fenced=True, owner_id=owner_id)


def progress(item: RunProgress) -> Transition:
    """Applying one progress item: fenced; finishes the run when its status is terminal."""
    sets: RowChanges = {"updated_at": item.updated_at, "idle_since": item.idle_since}
    if item.ctx is not None:  # no new checkpoint: the last one stays
        sets["ctx"] = item.ctx
    if item.reset_attempts:
        sets["resume_attempts"] = 0
    ends = item.status != "running"
    if ends:
        sets.update(finished(item.status, result=item.result, error=item.error, at=item.updated_at))
    elif item.release:
        sets.update(UNOWNED)
    return Transition(fence(item.owner_id, item.run_id), sets, ends_run=ends)


FINALIZABLE = Requirement(RUNNING)
"""What finishing a run from outside needs: it is running (whoever owns it)."""


def finalize(status: Status, *, error: str | None, at: datetime) -> Transition:
    """Finishing a running handler from outside its run (cancel, an unresumable run)."""
    return Transition(FINALIZABLE, finished(status, result=None, error=error, at=at), True)


def reopen(run_id: str, *, ctx: str | None, at: datetime) -> Transition:
    """Putting failed run ``run_id`` back to ``running`` from ``ctx``, unowned, attempts reset."""
    sets: RowChanges = {
        "status": "running",
        "ctx": ctx,
        "result": None,
        "error": None,
        "updated_at": at,
        "completed_at": None,
        "idle_since": None,
        "resume_attempts": 0,
        **UNOWNED,
    }
    return Transition(Requirement(frozenset({"failed"}), run_id), sets)


def replaceable(run_id: str) -> Requirement:
    """What overwriting a row with a new run needs: it holds run ``run_id``, finished."""
    return Requirement(TERMINAL_STATUSES, run_id)


def accepts_events(run_id: str) -> Requirement:
    """What recording an event sent to run ``run_id`` needs: the row is running it."""
    return Requirement(RUNNING, run_id)
