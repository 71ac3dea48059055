"""One structured log line per run state change.

Every line carries ``handler_id``, ``run_id`` and ``workflow_name`` as
``extra=`` fields (attributes of the ``LogRecord``), so a JSON formatter or a
log shipper can index them. Nothing is logged per event or per step at INFO.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..store.base import PersistentHandler

logger = logging.getLogger("llama_workflows_asgi.runs")


class RunIdentity(Protocol):
    """What names a run in a log line (a handler row, or a run's telemetry)."""

    @property
    def handler_id(self) -> str: ...

    @property
    def run_id(self) -> str | None: ...

    @property
    def workflow_name(self) -> str: ...


def _fields(row: RunIdentity, state: str) -> dict[str, object]:
    return {
        "handler_id": row.handler_id,
        "run_id": row.run_id,
        "workflow_name": row.workflow_name,
        "run_state": state,
    }


def state(row: RunIdentity, name: str, level: int = logging.INFO, **extra: object) -> None:
    """Log that the run of ``row`` entered state ``name``."""
    if not logger.isEnabledFor(level):
        return
    fields = {**_fields(row, name), **extra}
    logger.log(
        level,
        "run %s %s (handler %s, workflow %s)",
        row.run_id,
        name,
        row.handler_id,
        row.workflow_name,
        extra=fields,
    )


def resumed(row: PersistentHandler, *, adopted: bool, previous_owner: str | None) -> None:
    """Log a resume; an adoption (taken from an owner that did not release it) warns."""
    if not adopted:
        state(row, "resumed", resume_attempt=row.resume_attempts)
        return
    state(
        row,
        "adopted",
        logging.WARNING,
        previous_owner=previous_owner,
        resume_attempt=row.resume_attempts,
    )


def ended(row: RunIdentity, status: str, error: str | None) -> None:
    """Log how the run stopped executing here."""
    level = logging.WARNING if status == "lost" else logging.INFO
    state(row, status, level, error=error)
