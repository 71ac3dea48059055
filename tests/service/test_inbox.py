"""``service.inbox``: what may be sent into a run, and how it is delivered."""

from __future__ import annotations

import pytest
from workflows.events import StartEvent, StopEvent

from llama_workflows_asgi import WorkflowService
from llama_workflows_asgi.errors import BadEventError
from llama_workflows_asgi.service.inbox import deliver_entry
from llama_workflows_asgi.store import InboxEntry
from tests.support.factories import at
from tests.support.workflows import AnswerEvent

pytestmark = pytest.mark.timeout(20)


async def send(service: WorkflowService, handler_id: str, event: object, step: str | None) -> None:
    row = await service.get(handler_id)
    await service._inbox.send(row, service.registry.get(row.workflow_name), event, step)


async def test_an_event_sent_to_a_live_run_is_recorded_and_delivered(
    memory_service: WorkflowService,
) -> None:
    handler = await memory_service.start_run("hitl")
    await send(memory_service, handler.handler_id, AnswerEvent(answer="Ada"), None)
    done = await memory_service.wait_for(handler.handler_id)
    assert done.result is not None
    assert done.result.result == "got Ada"


async def test_an_envelope_is_decoded_among_the_declared_events(
    memory_service: WorkflowService,
) -> None:
    handler = await memory_service.start_run("hitl")
    envelope = {"type": "AnswerEvent", "value": {"answer": "Bo"}}
    await send(memory_service, handler.handler_id, envelope, "done")
    done = await memory_service.wait_for(handler.handler_id)
    assert done.result is not None
    assert done.result.result == "got Bo"


@pytest.mark.parametrize(
    ("event", "step", "message"),
    [
        (StopEvent(result=1), None, "a run's outcome is its own"),
        (StartEvent(), None, "it has already started"),
        (AnswerEvent(answer="x"), "nope", "Step nope does not exist"),
        ({"type": "Undeclared", "value": {}}, None, "Undeclared"),
    ],
)
async def test_what_cannot_be_sent_is_refused_before_it_is_recorded(
    memory_service: WorkflowService, event: object, step: str | None, message: str
) -> None:
    handler = await memory_service.start_run("hitl")
    with pytest.raises(BadEventError, match=message):
        await send(memory_service, handler.handler_id, event, step)
    assert await memory_service.store.read_inbox([handler.handler_id]) == []


async def test_an_entry_that_no_longer_decodes_is_dropped_not_delivered(
    memory_service: WorkflowService,
) -> None:
    handler = await memory_service.start_run("hitl")
    live = memory_service._live.get(handler.handler_id)
    assert live is not None
    assert live.run_id == handler.run_id
    entry = InboxEntry(7, handler.handler_id, live.run_id, '{"type": "Gone"}', None, at(0))
    deliver_entry(live, entry)
    assert 7 in live.delivered
    assert 7 in live._pending.consumed_inbox  # consumed with the next write
    assert memory_service._live.get(handler.handler_id) is live  # the run goes on
