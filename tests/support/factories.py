"""Small builders of store records for tests: handlers, events, progress items."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from llama_workflows_asgi.store import PersistentHandler, RunProgress, StoredEvent

T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
LEASE = T0 + timedelta(minutes=5)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def handler(handler_id: str, **fields: Any) -> PersistentHandler:
    values: dict[str, Any] = {
        "workflow_name": "wf",
        "status": "running",
        "run_id": f"run-{handler_id}",
        "started_at": T0,
    }
    return PersistentHandler(handler_id=handler_id, **(values | fields))


def event(sequence: int, **fields: Any) -> StoredEvent:
    values: dict[str, Any] = {
        "payload": json.dumps({"n": sequence}),
        "event_type": "Tick",
        "created_at": at(sequence),
    }
    return StoredEvent(sequence, **(values | fields))


def progress(h: PersistentHandler, **fields: Any) -> RunProgress:
    assert h.run_id is not None
    values: dict[str, Any] = {"owner_id": h.owner_id, "updated_at": at(100)}
    return RunProgress(h.handler_id, h.run_id, **(values | fields))
