"""How a run ended: the outcome a terminal event stands for, in text a database column takes.

``live.py`` records a run's outcome from its terminal event (or from a
failure to save what it produced); the writer stores it with the run's last
progress.
"""

from __future__ import annotations

from dataclasses import dataclass

from workflows.events import (
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)

from ..store.base import Status


@dataclass(frozen=True)
class Outcome:
    """How a run ended: its status, and its result envelope or error text."""

    status: Status
    result: str | None = None
    error: str | None = None
    event: StopEvent | None = None


def outcome_of(event: StopEvent, payload: str) -> Outcome:
    """The outcome a terminal event stands for."""
    if isinstance(event, WorkflowCancelledEvent):
        return Outcome("cancelled")
    if isinstance(event, WorkflowFailedEvent):
        return Outcome("failed", error=storable(str(event.exception)))
    if isinstance(event, WorkflowTimedOutEvent):
        return Outcome("failed", error=f"Workflow timed out after {float(event.timeout)}s")
    return Outcome("completed", result=payload, event=event)


def storable(text: str) -> str:
    """``text`` without what no database column takes: NUL, unpaired surrogates."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
