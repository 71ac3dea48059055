"""Owner heartbeats seen from the run service: a run adopted elsewhere stops here.

Every test runs on the memory store, SQLite and a real PostgreSQL (``make_store``).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from llama_workflows_asgi import HandlerQuery, ServiceConfig, WorkflowService
from llama_workflows_asgi.errors import StoreUnavailableError
from llama_workflows_asgi.store.base import utcnow
from tests.support.stores import StoreFactory
from tests.support.waiting import eventually
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


async def test_a_late_heartbeat_refuses_new_runs_until_a_round_renews_it(
    make_store: StoreFactory,
) -> None:
    """Others may adopt a late owner's runs at any moment: it must not take on new ones."""
    config = ServiceConfig(idle_timeout=None, lease_ttl=1.0, poll_interval=0.2)
    service = WorkflowService(make_store(), config=config)
    service.add_workflow("hitl", make_workflows()["hitl"])
    async with service.running_context():
        await service.start_run("hitl")
        await service._supervisor.stop()  # the rounds stall (a blocked loop, a slow database)

        refusals: list[str] = []

        async def refused() -> bool:
            try:
                await service.start_run("hitl")
            except StoreUnavailableError as exc:
                refusals.append(str(exc))
                return True
            return False

        await eventually(refused, "a start is refused once the heartbeat is late")
        assert "heartbeat" in refusals[-1]
        before = len(await service.store.query(HandlerQuery()))
        service._supervisor.start()
        await eventually(lambda: not service._supervisor.heartbeat_late(), "a round renews it")
        await service.start_run("hitl")
        assert len(await service.store.query(HandlerQuery())) == before + 1
