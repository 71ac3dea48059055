"""Retention: the service deletes old finished runs in the background.

Every test runs on the memory store, SQLite and a real PostgreSQL (``make_store``).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from llama_workflows_asgi import HandlerQuery, ServiceConfig, WorkflowService
from llama_workflows_asgi.store import AbstractWorkflowStore, Status
from llama_workflows_asgi.store.base import utcnow
from tests.support.factories import handler
from tests.support.stores import StoreFactory

pytestmark = pytest.mark.timeout(60)


async def put(
    store: AbstractWorkflowStore, handler_id: str, status: Status, age_days: float
) -> None:
    ended = utcnow() - timedelta(days=age_days)
    if status == "running":  # owned by a live process elsewhere: this service leaves it be
        extra = {"owner_id": "elsewhere", "lease_expires_at": utcnow() + timedelta(days=1)}
    else:
        extra = {"completed_at": ended}
    await store.create_handler(handler(handler_id, status=status, started_at=ended, **extra))
    if status == "running":
        await store.heartbeat("elsewhere", now=utcnow(), expires_at=utcnow() + timedelta(days=1))


async def test_old_finished_runs_go_per_status(make_store: StoreFactory) -> None:
    store = make_store()
    await store.start()
    for name, status, age in [
        ("old-done", "completed", 8),
        ("old-cancelled", "cancelled", 8),
        ("old-failed", "failed", 8),
        ("older-failed", "failed", 40),
        ("new-done", "completed", 1),
        ("old-running", "running", 100),
    ]:
        await put(store, name, status, age)  # type: ignore[arg-type]
    config = ServiceConfig(
        retention=timedelta(days=7),
        retention_by_status={"failed": timedelta(days=30), "cancelled": None},
        retention_interval=0.05,
        retention_batch_size=1,
    )
    service = WorkflowService(store, config=config)
    async with service.running_context():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # two rounds: the second finds nothing left
            if service.retention.rounds >= 2:
                break
            await asyncio.sleep(0.02)
        assert service.retention.rounds >= 2
        assert service.retention.deleted == 2
        kept = {h.handler_id: h.status for h in await service.store.query(HandlerQuery())}
    assert kept == {
        "old-cancelled": "cancelled",
        "old-failed": "failed",
        "new-done": "completed",
        "old-running": "running",  # never pruned, however old
    }


def test_retention_is_off_by_default_and_checked() -> None:
    assert ServiceConfig().retention_groups() == []
    week, month = timedelta(days=7), timedelta(days=30)
    config = ServiceConfig(retention=week, retention_by_status={"failed": month})
    assert config.retention_groups() == [(week, ["completed", "cancelled"]), (month, ["failed"])]
    with pytest.raises(ValueError, match="finished status"):
        ServiceConfig(retention_by_status={"running": week})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="positive"):
        ServiceConfig(retention=timedelta(0))
    with pytest.raises(ValueError, match="retention_interval"):
        ServiceConfig(retention=week, retention_interval=0)
