"""``service.health``: what makes a running service unhealthy."""

from __future__ import annotations

import pytest

from llama_workflows_asgi import WorkflowService
from llama_workflows_asgi.service.health import background_problem

pytestmark = pytest.mark.timeout(20)


async def problem_of(service: WorkflowService) -> str | None:
    return await background_problem(
        service.store, service.config, service._writer, service._supervisor
    )


async def test_a_running_service_with_its_store_and_rounds_is_healthy(
    memory_service: WorkflowService,
) -> None:
    await memory_service._supervisor.round()
    assert await problem_of(memory_service) is None


async def test_ownership_rounds_silent_for_half_a_lease_are_a_problem(
    memory_service: WorkflowService,
) -> None:
    supervisor = memory_service._supervisor
    await supervisor.stop()  # no more rounds
    supervisor._last_round -= memory_service.config.lease_ttl  # as if a lease went by
    problem = await problem_of(memory_service)
    assert problem is not None
    assert problem.startswith("No ownership round completed for")
