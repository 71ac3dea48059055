"""``service.control``: the host starts, stops and asks after a service through these.

Admission (what a service refuses while not started or stopping) is the facade's
check, in ``test_service.py``; the order of the work, ``test_service_lifecycle.py``.
"""

from __future__ import annotations

import pytest
from workflows.events import StartEvent

from llama_workflows_asgi import MemoryWorkflowStore, WorkflowService
from llama_workflows_asgi.service.control import ServiceControl
from tests.service.conftest import serving

pytestmark = pytest.mark.timeout(30)


def test_the_facade_inherits_its_controls() -> None:
    assert issubclass(WorkflowService, ServiceControl)


async def test_health_follows_the_service_s_life() -> None:
    service = serving(MemoryWorkflowStore())
    assert (service.running, service.draining, service.drained) == (False, False, False)
    assert await service.health_problem() == "The workflow service is not running"
    async with service.running_context():
        assert await service.health_problem() is None
        service.begin_stop()
        assert service.draining
        assert await service.health_problem() == "The workflow service is stopping"
    assert service.drained
    assert not await service.healthy()


async def test_start_and_stop_are_idempotent() -> None:
    service = serving(MemoryWorkflowStore())
    await service.start()
    await service.start()
    assert service.running
    assert await service.healthy()
    done = await service.run("greet", StartEvent(name="twice"))
    assert done.status == "completed"
    await service.stop()
    await service.stop()
    assert not service.running


async def test_running_context_stops_the_service_when_the_block_raises() -> None:
    service = serving(MemoryWorkflowStore())
    with pytest.raises(RuntimeError, match="inside"):
        await raise_inside(service)
    assert not service.running


async def raise_inside(service: WorkflowService) -> None:
    async with service.running_context() as running:
        assert running is service
        assert service.running
        raise RuntimeError("inside")
