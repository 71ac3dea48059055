"""``service.starting``: what a start accepts, idempotent replays, reused handler ids."""

from __future__ import annotations

from typing import Any

import pytest
from workflows.events import StartEvent

from llama_workflows_asgi import PersistentHandler, WorkflowService
from llama_workflows_asgi.errors import BadRequestError, ConflictError
from llama_workflows_asgi.service.inputs import scoped_key

pytestmark = pytest.mark.timeout(20)


async def start(
    service: WorkflowService,
    name: str,
    event: StartEvent | None = None,
    *,
    handler_id: str | None = None,
    context: dict[str, Any] | None = None,
    key: str | None = None,
    request_hash: str | None = None,
) -> PersistentHandler:
    """A start through the room itself, as the facade calls it once the caller is checked."""
    return await service._starter.start(
        service.registry.get(name),
        event,
        handler_id=handler_id,
        principal=None,
        context=context,
        key=key,
        request_hash=request_hash,
    )


async def test_a_start_writes_the_row_and_the_run_becomes_live(
    memory_service: WorkflowService,
) -> None:
    row = await start(memory_service, "hitl", handler_id="mine")
    assert (row.handler_id, row.workflow_name, row.status) == ("mine", "hitl", "running")
    assert row.run_id is not None
    assert memory_service._live.get("mine") is not None
    stored = await memory_service.get("mine")
    assert stored.run_id == row.run_id


async def test_the_same_key_and_request_replay_the_first_handler(
    memory_service: WorkflowService,
) -> None:
    key = scoped_key(None, "k1")
    first = await start(memory_service, "hitl", key=key, request_hash="h")
    again = await start(memory_service, "hitl", key=key, request_hash="h")
    assert again.handler_id == first.handler_id
    with pytest.raises(ConflictError, match="different request"):
        await start(memory_service, "hitl", key=key, request_hash="other")


async def test_a_running_handler_id_cannot_be_reused(memory_service: WorkflowService) -> None:
    await start(memory_service, "hitl", handler_id="busy")
    with pytest.raises(ConflictError):
        await start(memory_service, "hitl", handler_id="busy")


async def test_a_finished_handler_id_is_reused_by_its_workflow_only(
    memory_service: WorkflowService,
) -> None:
    done = await memory_service.run("counter", handler_id="c")
    assert done.status == "completed"
    again = await memory_service.run("counter", handler_id="c")
    assert again.result is not None
    assert again.result.result == {"count": 2}  # the state store carried over
    with pytest.raises(ConflictError):
        await start(memory_service, "greet", handler_id="c")


async def test_a_context_is_refused_unless_the_service_accepts_it(
    memory_service: WorkflowService,
) -> None:
    with pytest.raises(BadRequestError, match="Context API is disabled"):
        await start(memory_service, "greet", context={"state": {}})


async def test_a_start_event_of_another_workflow_is_refused(
    memory_service: WorkflowService,
) -> None:
    with pytest.raises(BadRequestError, match="MyStart"):  # it takes MyStart(topic) only
        await start(memory_service, "custom", StartEvent())
