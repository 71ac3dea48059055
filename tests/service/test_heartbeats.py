"""Owner heartbeats seen from the run service: a run adopted elsewhere stops here.

Every test runs on the memory store, SQLite and a real PostgreSQL (``make_store``).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from llama_workflows_asgi import HandlerQuery, ServiceConfig, WorkflowService
from llama_workflows_asgi.store.base import utcnow
from tests.support.stores import StoreFactory
from tests.support.workflows import make_workflows

pytestmark = pytest.mark.timeout(60)

CONFIG = ServiceConfig(idle_timeout=None, lease_ttl=3.0, poll_interval=0.1)


async def test_a_run_adopted_after_our_heartbeat_lapsed_stops_here(
    make_store: StoreFactory,
) -> None:
    service = WorkflowService(make_store(), config=CONFIG)
    service.add_workflow("hitl", make_workflows()["hitl"])
    async with service.running_context():
        store = service.store
        assert service.owner.id in await store.list_owners()  # written before any run
        handler = await service.start_run("hitl")
        # Another process, judging by its clock an hour on, finds our heartbeat lapsed.
        later = utcnow() + timedelta(hours=1)
        [taken] = await store.claim_handlers(
            "elsewhere", now=later, lease_until=later + timedelta(seconds=8)
        )
        assert (taken.handler_id, taken.previous_owner_id) == (handler.handler_id, service.owner.id)

        deadline = time.monotonic() + 10
        while handler.handler_id in service._runs:  # our next round sees the run gone
            assert time.monotonic() < deadline, "the adopted run kept running here"
            await asyncio.sleep(0.02)
        [row] = await store.query(HandlerQuery(handler_id_in=[handler.handler_id]))
        # Stopping it here wrote nothing: the release was fenced off.
        assert (row.status, row.owner_id) == ("running", "elsewhere")
