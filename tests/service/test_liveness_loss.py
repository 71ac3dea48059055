"""A process whose PostgreSQL liveness session ends stops owning its runs, then takes them back."""

from __future__ import annotations

import asyncio
import logging

import pytest
from workflows.events import StartEvent

from llama_workflows_asgi import ServiceConfig, SqlAlchemyWorkflowStore, WorkflowService
from llama_workflows_asgi.store._liveness_pg import PostgresLiveness
from tests.support.postgres import PostgresServer
from tests.support.waiting import eventually
from tests.support.workflows import make_workflows

pytestmark = pytest.mark.timeout(60)

CONFIG = ServiceConfig(lease_ttl=3.0, poll_interval=0.1, stream_poll_interval=0.05)


async def step_starts(service: WorkflowService, handler_id: str) -> int:
    row = await service.get(handler_id)
    assert row.run_id is not None
    events = await service.store.read_events(row.run_id)
    return sum(1 for e in events if e.event_type == "StepStateChanged" and '"running"' in e.payload)


async def test_losing_the_liveness_session_stops_runs_and_they_resume_once_it_is_back(
    postgres_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llama_workflows_asgi.store._liveness_pg")
    service = WorkflowService(SqlAlchemyWorkflowStore(postgres_url), config=CONFIG)
    service.add_workflow("slow", make_workflows()["slow"])
    async with service.running_context():
        baseline = await service.run("slow", StartEvent(seconds=0.1))
        handler = await service.start_run("slow", StartEvent(seconds=1.0))
        await eventually(
            lambda: step_starts(service, handler.handler_id), "the step runs", timeout=10
        )
        postgres_server.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = '{PostgresLiveness.application_name}'"
        )
        # The token may be lost and held again within one poll of a flag: wait on the record.
        await eventually(
            lambda: any("liveness connection lost" in r.getMessage() for r in caplog.records),
            "the loss is noticed",
        )
        done = await asyncio.wait_for(service.wait_for(handler.handler_id), 20)
        assert service.store.liveness.held
        interrupted, plain = (
            await step_starts(service, handler.handler_id),
            await step_starts(service, baseline.handler_id),
        )

    assert done.status == "completed"
    assert done.error is None
    # The step in flight was stopped when the session ended, and ran again.
    assert interrupted > plain
