"""Every documented waiting pattern survives its checkpoint: idle release and SIGKILL.

The patterns (``tests.support.workflows.pattern_workflows``):

* ``hitl``: a step returns an ``InputRequiredEvent`` subclass and another takes a
  ``HumanResponseEvent`` subclass in its signature;
* ``waiter``: a step waits with ``ctx.wait_for_event`` for an event declared only
  through ``additional_events``, streams an undeclared ``InputRequiredEvent``
  subclass meanwhile, keeps a typed state model and ends with its own StopEvent.

Each run is taken out of memory while it waits (released as idle, or its process
killed), then the answer is sent and the run must finish with it, its result an
instance of the workflow's own StopEvent class.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from workflows.context.serializers import JsonSerializer
from workflows.events import StopEvent

from llama_workflows_asgi import ServiceConfig, WorkflowService, codec
from llama_workflows_asgi.store import AbstractWorkflowStore
from llama_workflows_asgi.store.base import utcnow
from tests.support.processes import ServerProcess, server_processes
from tests.support.stores import StoreFactory
from tests.support.workflows import (
    AnswerEvent,
    DecisionEvent,
    ReviewDone,
    pattern_workflows,
)

pytestmark = pytest.mark.timeout(120)


ANSWERS: dict[str, Any] = {
    # The client's envelope for one, the engine's serializer format for the other.
    "hitl": {"type": "AnswerEvent", "value": {"answer": "Ada"}, "qualified_name": None},
    "waiter": JsonSerializer().serialize_value(DecisionEvent(approved=True, note="fine")),
}
RESULTS: dict[str, StopEvent] = {
    "hitl": StopEvent(result="got Ada"),
    "waiter": ReviewDone(approved=True, notes=["fine"]),
}
WIRE_RESULTS: dict[str, dict[str, Any]] = {
    "hitl": {"result": "got Ada"},
    "waiter": {"approved": True, "notes": ["fine"]},
}
WAITING_FOR = {"hitl": "AskEvent", "waiter": "QuestionEvent"}
PATTERNS = list(ANSWERS)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


def test_answers_are_the_events_the_patterns_wait_for() -> None:
    assert ANSWERS["hitl"]["type"] == AnswerEvent.__name__
    assert set(pattern_workflows()) == set(PATTERNS)


# -- idle release ------------------------------------------------------------------------


def new_service(store: AbstractWorkflowStore) -> WorkflowService:
    config = ServiceConfig(idle_timeout=0.1, poll_interval=0.1, stream_poll_interval=0.05)
    service = WorkflowService(store, config=config)
    for name, (workflow, additional) in pattern_workflows().items():
        service.add_workflow(name, workflow, additional)
    return service


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("pattern", PATTERNS)
async def test_pattern_resumes_after_idle_release(make_store: StoreFactory, pattern: str) -> None:
    service = new_service(make_store())
    async with service.running_context():
        handler = await service.start_run(pattern)

        async def released() -> bool:
            row = await service.get(handler.handler_id)
            # The service's table of runs in memory (there is no public view).
            return row.idle_since is not None and handler.handler_id not in service._runs

        await eventually(released, "the waiting run was released from memory")
        await service.send_event(handler.handler_id, ANSWERS[pattern])
        done = await asyncio.wait_for(service.wait_for(handler.handler_id), 20)

    assert (done.status, done.error) == ("completed", None)
    assert type(done.result) is type(RESULTS[pattern])
    assert done.result == RESULTS[pattern]


# -- SIGKILL and a new process -------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def crash_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'patterns.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def two_servers(crash_db: str, tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, ...]]:
    env = {"WF_DATABASE_URL": crash_db, "WF_IDLE_TIMEOUT": "none"}
    first, second = ServerProcess("first", env, tmp_path), ServerProcess("second", env, tmp_path)
    with server_processes(first, second):
        await asyncio.to_thread(first.start)
        yield first, second


async def read_stream_once(http: httpx.AsyncClient, handler_id: str) -> list[str]:
    types: list[str] = []
    params = {"sse": "false", "after_sequence": "-1"}
    async with http.stream("GET", f"/events/{handler_id}", params=params) as response:
        async for line in response.aiter_lines():
            types.append(line.split('"type":"')[1].split('"')[0])
            if set(WAITING_FOR.values()) & set(types):
                break
    return types


async def test_every_pattern_resumes_after_sigkill(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    # One kill and restart for all patterns: starting processes is the slow part.
    first, second = two_servers
    waiting: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        for pattern in PATTERNS:
            started = await http.post(
                f"/workflows/pattern_{pattern}/run-nowait", json={"start_event": {}}
            )
            assert started.status_code == 200, started.text
            handler_id = started.json()["handler_id"]
            # The waiting event is written with the checkpoint taken as the run waits.
            seen = await asyncio.wait_for(read_stream_once(http, handler_id), 10)
            assert WAITING_FOR[pattern] in seen
            waiting[pattern] = handler_id
    first.kill()

    await asyncio.to_thread(second.start)
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        for pattern, handler_id in waiting.items():
            sent = await http.post(f"/events/{handler_id}", json={"event": ANSWERS[pattern]})
            assert sent.status_code == 200, sent.text
        for pattern, handler_id in waiting.items():
            await eventually(
                lambda hid=handler_id: _finished(http, hid), f"{pattern} finished", timeout=20
            )
            body = (await http.get(f"/handlers/{handler_id}")).json()
            assert (body["status"], body["error"]) == ("completed", None), body
            assert body["result"]["value"] == WIRE_RESULTS[pattern]
            assert body["result"]["type"] == type(RESULTS[pattern]).__name__


async def _finished(http: httpx.AsyncClient, handler_id: str) -> bool:
    return (await http.get(f"/handlers/{handler_id}")).status_code != 202


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_a_checkpoint_holding_an_undeclared_type_fails_with_a_plain_message(
    make_store: StoreFactory,
) -> None:
    first = WorkflowService(make_store(), config=ServiceConfig(idle_timeout=None))
    workflow, additional = pattern_workflows()["waiter"]
    first.add_workflow("waiter", workflow, additional)
    async with first.running_context():
        handler = await first.start_run("waiter")

        async def waiting() -> bool:
            return (await first.get(handler.handler_id)).idle_since is not None

        await eventually(waiting, "the run waits for its decision")

    # The answer was recorded (it was declared then); the workflow is served again
    # without the event declared: the run cannot be restored.
    store = make_store()
    answer = codec.dumps(codec.envelope(DecisionEvent(approved=True)))
    assert handler.run_id is not None
    await store.start()
    assert await store.enqueue_event(handler.handler_id, handler.run_id, answer, None, utcnow())
    await store.close()
    second = WorkflowService(store, config=ServiceConfig(poll_interval=0.1))
    second.add_workflow("waiter", pattern_workflows()["waiter"][0])
    async with second.running_context():
        failed = await asyncio.wait_for(second.wait_for(handler.handler_id), 20)
    assert failed.status == "failed"
    assert failed.error == (
        "Cannot resume: the checkpoint holds a DecisionEvent, a type this workflow does not "
        "declare; register it with add_workflow(..., additional_events=[...])"
    )
