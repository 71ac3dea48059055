"""``service.rooms``: one set of rooms per service, sharing one live-run set and one stop signal."""

from __future__ import annotations

import pytest

from llama_workflows_asgi import MemoryWorkflowStore, StoreUnavailableError, WorkflowService
from llama_workflows_asgi.registry import WorkflowRegistry
from llama_workflows_asgi.service.config import ServiceConfig
from llama_workflows_asgi.service.ownership import Owner
from llama_workflows_asgi.service.rooms import Basis, Rooms, build_rooms
from llama_workflows_asgi.service.runtime import DurableRuntime
from llama_workflows_asgi.telemetry import Telemetry

pytestmark = pytest.mark.timeout(20)


def rooms_on_memory(telemetry: Telemetry) -> Rooms:
    basis = Basis(
        MemoryWorkflowStore(),
        Owner.for_this_process(),
        ServiceConfig(),
        WorkflowRegistry(),
        DurableRuntime(),
        telemetry,
        scoped=False,
    )
    return build_rooms(basis)


async def test_the_stop_signal_the_rooms_are_built_with_ends_their_waits() -> None:
    rooms = rooms_on_memory(Telemetry())
    rooms.stop.reset()
    rooms.stop.begin()
    with pytest.raises(StoreUnavailableError, match="shutting down"):
        await rooms.waiter.wait_for("any", None)


def test_the_gauges_read_the_rooms_themselves() -> None:
    telemetry = Telemetry()
    rooms = rooms_on_memory(telemetry)
    assert telemetry.live_runs() == rooms.live.values() == []
    assert telemetry.unwritten_since() is rooms.live.writer.unwritten_since is None
    rooms.supervisor.queued = {"greet": 2}  # as an ownership round counts them
    assert telemetry.queued_runs() == {"greet": 2}


def test_a_telemetry_watching_nothing_reports_nothing() -> None:
    telemetry = Telemetry()
    assert (list(telemetry.live_runs()), telemetry.unwritten_since()) == ([], None)
    assert dict(telemetry.queued_runs()) == {}


async def test_a_started_run_is_in_the_live_set_the_gauges_read(
    memory_service: WorkflowService,
) -> None:
    handler = await memory_service.start_run("hitl")
    rooms = memory_service._rooms
    assert rooms.live.get(handler.handler_id) is not None
    assert [run.row.handler_id for run in memory_service.telemetry.live_runs()] == [
        handler.handler_id
    ]
