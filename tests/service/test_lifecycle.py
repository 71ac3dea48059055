"""The run service used directly (no HTTP): how runs end, and what they leave behind.

Every test runs on the memory store, SQLite and a real PostgreSQL (``make_store``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from workflows.events import StartEvent, StopEvent

from llama_workflows_asgi import (
    BadEventError,
    ConflictError,
    HandlerNotFoundError,
    HandlerQuery,
    MemoryWorkflowStore,
    PersistentHandler,
    ServiceConfig,
    StoreUnavailableError,
    WorkflowService,
)
from llama_workflows_asgi.service import EventStream, StoredEvent
from llama_workflows_asgi.store import AbstractWorkflowStore
from tests.support.stores import StoreFactory
from tests.support.waiting import parked_in
from tests.support.workflows import AnswerEvent, CustomWorkflow, MyStart, MyStop, make_workflows

pytestmark = pytest.mark.timeout(60)

CONFIG = ServiceConfig(
    idle_timeout=0.2,
    lease_ttl=3.0,
    poll_interval=0.1,
    stream_poll_interval=0.05,
    stop_timeout=2.0,
)


def new_service(store: AbstractWorkflowStore, *, scoped: bool = False) -> WorkflowService:
    service = WorkflowService(store, config=CONFIG, scoped=scoped)
    for name, workflow in make_workflows().items():
        service.add_workflow(name, workflow)
    return service


@pytest.fixture
async def service(make_store: StoreFactory) -> AsyncIterator[WorkflowService]:
    service = new_service(make_store())
    async with service.running_context():
        yield service


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


def leftovers(service: WorkflowService) -> dict[str, Any]:
    # Private state on purpose: these maps hold one entry per run executing
    # here, and nothing public shows them. A run that ended or was released and
    # is still listed is a leak: a long-lived server would grow with every run
    # (and the engine's queues keep the run's whole tick history alive).
    return {
        "service runs": dict(service._runs),
        "runtime observers": dict(service.runtime._observers),
        "engine queues": dict(service.runtime._decorated._queues),  # type: ignore[attr-defined]
        "background tasks": set(service._background),
    }


async def assert_forgotten(service: WorkflowService) -> None:
    """No per-run state remains (allowing the loop a moment to finish callbacks)."""

    async def clean() -> bool:
        return not any(leftovers(service).values())

    try:
        await eventually(clean, "no per-run state remains", timeout=2)
    except pytest.fail.Exception:
        pytest.fail(f"per-run state left behind: {leftovers(service)}")


async def stored(store: AbstractWorkflowStore, handler_id: str) -> PersistentHandler:
    rows = await store.query(HandlerQuery(handler_id_in=[handler_id], load_ctx=False))
    assert len(rows) == 1, rows
    return rows[0]


async def wait_released_idle(service: WorkflowService, handler_id: str) -> None:
    async def released() -> bool:
        row = await service.get(handler_id)
        return row.idle_since is not None and row.owner_id is None

    await eventually(released, f"{handler_id} is released while idle")


# -- how runs end ---------------------------------------------------------------------


async def test_host_code_runs_a_workflow_to_completion(service: WorkflowService) -> None:
    done = await service.run("greet", StartEvent(name="x"))
    assert done.status == "completed"
    assert done.result is not None
    assert done.result.result == {"greeting": "Hello, x!"}
    assert type(done.result) is StopEvent
    assert done.error is None
    assert done.completed_at is not None
    assert done.owner_id is None

    assert done.run_id is not None
    logged = await service.store.read_events(done.run_id)
    kinds = [e.event_type for e in logged if not e.internal]
    assert kinds == ["ProgressEvent", "ProgressEvent", "ProgressEvent", "StopEvent"]
    await assert_forgotten(service)


async def test_a_completed_run_leaves_no_state(service: WorkflowService) -> None:
    handlers = await asyncio.gather(*(service.run("greet") for _ in range(5)))
    assert {h.status for h in handlers} == {"completed"}
    await assert_forgotten(service)


async def test_a_failed_run_leaves_no_state(service: WorkflowService) -> None:
    done = await service.run("fail")
    assert done.status == "failed"
    assert done.error is not None
    assert "kaboom" in done.error
    assert done.result is None
    await assert_forgotten(service)


async def test_a_cancelled_run_leaves_no_state(service: WorkflowService) -> None:
    handler = await service.start_run("slow")
    await eventually(
        lambda: _has_started(service, handler.handler_id), "the slow step started", timeout=5
    )
    assert await service.cancel(handler.handler_id) == "cancelled"
    done = await service.wait_for(handler.handler_id)
    assert done.status == "cancelled"
    assert (await stored(service.store, handler.handler_id)).status == "cancelled"
    with pytest.raises(ConflictError):
        await service.cancel(handler.handler_id)
    await assert_forgotten(service)


async def _has_started(service: WorkflowService, handler_id: str) -> bool:
    row = await service.get(handler_id)
    assert row.run_id is not None
    events = await service.store.read_events(row.run_id)
    return any(e.event_type == "StepStateChanged" for e in events)


async def _asked(service: WorkflowService, handler_id: str) -> bool:
    """Whether the run's question is written: it waits for input (not yet released as idle)."""
    row = await service.get(handler_id)
    assert row.run_id is not None
    events = await service.store.read_events(row.run_id)
    return any(e.event_type == "AskEvent" for e in events)


async def test_an_idle_run_is_released_and_leaves_no_state(service: WorkflowService) -> None:
    handler = await service.start_run("hitl")
    await wait_released_idle(service, handler.handler_id)
    row = await stored(service.store, handler.handler_id)
    assert row.status == "running"
    await assert_forgotten(service)


async def test_an_event_brings_a_released_run_back_and_it_finishes(
    service: WorkflowService,
) -> None:
    handler = await service.start_run("hitl")
    await wait_released_idle(service, handler.handler_id)
    await assert_forgotten(service)

    await service.send_event(handler.handler_id, AnswerEvent(answer="Ada"))
    done = await service.wait_for(handler.handler_id)
    assert done.status == "completed"
    assert done.result is not None
    assert done.result.result == "got Ada"
    await assert_forgotten(service)


async def test_an_envelope_sent_to_a_released_run_is_decoded_and_delivered(
    service: WorkflowService,
) -> None:
    handler = await service.start_run("hitl")
    await wait_released_idle(service, handler.handler_id)
    envelope = {"type": "AnswerEvent", "value": {"answer": "Bo"}}
    await service.send_event(handler.handler_id, envelope)
    done = await service.wait_for(handler.handler_id)
    assert done.result is not None
    assert done.result.result == "got Bo"


# -- wait_for -------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", ["greet", "fail", "custom"])
async def test_wait_for_returns_exactly_the_stored_row(
    service: WorkflowService, workflow: str
) -> None:
    start = MyStart(topic="cats") if workflow == "custom" else None
    handler = await service.start_run(workflow, start)
    done = await service.wait_for(handler.handler_id)
    assert_same_row(done, await stored(service.store, handler.handler_id))
    assert_same_row(done, await service.get(handler.handler_id))


async def test_wait_for_a_resumed_run_returns_exactly_the_stored_row(
    service: WorkflowService,
) -> None:
    handler = await service.start_run("hitl")
    await wait_released_idle(service, handler.handler_id)
    await service.send_event(handler.handler_id, AnswerEvent(answer="Ada"))
    done = await service.wait_for(handler.handler_id)
    assert_same_row(done, await stored(service.store, handler.handler_id))


async def test_wait_for_a_cancelled_run_returns_exactly_the_stored_row(
    service: WorkflowService,
) -> None:
    handler = await service.start_run("slow")
    await service.cancel(handler.handler_id)
    done = await service.wait_for(handler.handler_id)
    assert_same_row(done, await stored(service.store, handler.handler_id))


async def test_wait_for_a_run_adopted_from_a_dead_process_returns_the_stored_row(
    make_store: StoreFactory,
) -> None:
    # Idle runs stay in memory here, so the run is surely live when it finishes.
    service = WorkflowService(make_store(), config=dataclasses.replace(CONFIG, idle_timeout=None))
    service.add_workflow("hitl", make_workflows()["hitl"])
    async with service.running_context():
        # The row a process left when it died right after writing it: owned by
        # an earlier start of this pid (so dead), nothing checkpointed yet.
        orphan = PersistentHandler(
            handler_id="orphan-1",
            workflow_name="hitl",
            status="running",
            run_id="orphan-run-1",
            start_event={"type": "StartEvent", "value": {}},
            owner_id=f"{service.owner.host}:{service.owner.pid}:{'0' * 12}",
        )
        await service.store.create_handler(orphan)

        async def adopted() -> bool:
            return (await service.get("orphan-1")).owner_id == service.owner.id

        await eventually(adopted, "the orphaned run is adopted")
        await service.send_event("orphan-1", AnswerEvent(answer="Orphan"))
        done = await service.wait_for("orphan-1")
        assert done.result is not None
        assert done.result.result == "got Orphan"
        assert_same_row(done, await stored(service.store, "orphan-1"))


def assert_same_row(returned: PersistentHandler, row: PersistentHandler) -> None:
    """``returned == row``, failing with just the fields that differ."""
    differ = {
        name: (getattr(returned, name), getattr(row, name))
        for name in PersistentHandler.model_fields
        if getattr(returned, name) != getattr(row, name)
    }
    assert not differ, f"returned vs stored: {differ}"


# -- restarting handlers and principals ---------------------------------------------------


async def test_restarting_a_finished_handler_carries_its_state_store(
    make_store: StoreFactory,
) -> None:
    service = new_service(make_store(), scoped=True)
    async with service.running_context():
        runs = [await service.run("counter", handler_id="c-1", principal="alice") for _ in range(3)]
        assert [r.result.result["count"] for r in runs if r.result] == [1, 2, 3]
        assert len({r.run_id for r in runs}) == 3
        assert len(await service.store.query(HandlerQuery())) == 1

        with pytest.raises(ConflictError, match="already in use"):
            await service.start_run("counter", handler_id="c-1", principal="bob")
        with pytest.raises(ConflictError, match="already in use"):
            await service.start_run("greet", handler_id="c-1", principal="alice")
        with pytest.raises(HandlerNotFoundError):
            await service.get("c-1", principal="bob")
        with pytest.raises(HandlerNotFoundError):
            await service.wait_for("c-1", principal="bob")

        fourth = await service.run("counter", handler_id="c-1", principal="alice")
        assert fourth.result is not None
        assert fourth.result.result == {"count": 4}
        await assert_forgotten(service)


async def test_a_running_handler_id_cannot_be_restarted(service: WorkflowService) -> None:
    handler = await service.start_run("slow", handler_id="busy")
    with pytest.raises(ConflictError, match="already running"):
        await service.start_run("slow", handler_id="busy")
    await service.cancel(handler.handler_id)
    await service.wait_for(handler.handler_id)
    await assert_forgotten(service)


# -- idempotency ------------------------------------------------------------------------


async def test_an_idempotency_key_replays_the_same_handler(service: WorkflowService) -> None:
    def start(request_hash: str, principal: str | None = None) -> Awaitable[PersistentHandler]:
        return service.start_run(
            "greet",
            StartEvent(name="k"),
            idempotency_key="key-1",
            request_hash=request_hash,
            principal=principal,
        )

    first = await start("h1")
    again = await start("h1")
    assert again.handler_id == first.handler_id
    with pytest.raises(ConflictError, match="different request"):
        await start("h2")

    done = await service.wait_for(first.handler_id)
    replay = await start("h1")
    assert replay == done  # after the run ended, the finished handler is replayed
    assert len(await service.store.query(HandlerQuery())) == 1

    # Keys are scoped to the caller: another principal's same key is another request.
    other = await start("h2", principal="someone-else")
    assert other.handler_id != first.handler_id
    await service.wait_for(other.handler_id)
    await assert_forgotten(service)


# -- graceful stop and resume -------------------------------------------------------------


def reopen(store: AbstractWorkflowStore, make_store: StoreFactory) -> AbstractWorkflowStore:
    """The same database through a new store object (a memory store is its own database)."""
    return store if isinstance(store, MemoryWorkflowStore) else make_store()


async def test_stop_releases_running_runs_and_a_new_service_resumes_them(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    first = new_service(store)
    await first.start()
    slow = await first.start_run("slow", StartEvent(seconds=0.5))
    hitl = await first.start_run("hitl")
    await eventually(lambda: _has_started(first, slow.handler_id), "the slow step started")
    await first.stop()
    await assert_forgotten(first)

    reader = reopen(store, make_store)
    for handler in (slow, hitl):
        row = await stored(reader, handler.handler_id)
        assert (row.status, row.owner_id, row.error) == ("running", None, None)
    await reader.close()

    second = new_service(reopen(store, make_store))
    async with second.running_context():
        done = await asyncio.wait_for(second.wait_for(slow.handler_id), 10)
        assert done.status == "completed"
        assert done.result is not None
        assert done.result.result == "slept"

        await second.send_event(hitl.handler_id, AnswerEvent(answer="again"))
        answered = await asyncio.wait_for(second.wait_for(hitl.handler_id), 10)
        assert answered.result is not None
        assert answered.result.result == "got again"
        await assert_forgotten(second)


async def test_begin_stop_refuses_new_work_ends_streams_and_waits_and_releases_runs(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    service = new_service(store)
    await service.start()
    slow = await service.start_run("slow", StartEvent(seconds=30))
    await eventually(lambda: _has_started(service, slow.handler_id), "the slow step started")
    stream = await service.open_stream(slow.handler_id, after=-1)
    assert stream is not None
    asked = _watch_asking(stream)
    waiting = asyncio.ensure_future(service.wait_for(slow.handler_id))
    read = asyncio.ensure_future(_drain_stream(stream))
    # Both wait before the stop begins: the waiter for the run's end, the stream
    # for events after its first batch.
    await eventually(
        _true(lambda: parked_in(waiting, "Waiter._written")), "the caller waits for the run"
    )
    await asyncio.wait_for(asked.wait(), 5)
    assert not read.done()

    service.begin_stop()
    with pytest.raises(StoreUnavailableError) as refused:
        await service.start_run("greet")
    assert refused.value.retry_after == 1
    with pytest.raises(StoreUnavailableError):
        await waiting  # a caller waiting for the run is answered, not left hanging
    await asyncio.wait_for(read, 5)  # the stream ended by itself

    async def drained() -> bool:
        return service.drained

    await eventually(drained, "the runs are released", timeout=CONFIG.stop_timeout)
    if store.durable:
        row = await stored(store, slow.handler_id)
        assert (row.status, row.owner_id, row.error) == ("running", None, None)
    await service.stop()


async def _drain_stream(stream: Any) -> None:
    async for _ in stream:
        pass


def _watch_asking(stream: EventStream) -> asyncio.Event:
    """Set once ``stream`` asks for the events after its first batch (it then waits for them)."""
    asked, next_events = asyncio.Event(), stream.next_events

    async def asking(run_id: str, cursor: int, timeout: float) -> list[StoredEvent] | None:
        asked.set()
        return await next_events(run_id, cursor, timeout)

    stream.next_events = asking
    return asked


def _true(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return check()

    return checked


async def test_stop_does_not_fail_a_run_waiting_for_input(make_store: StoreFactory) -> None:
    store = make_store()
    first = new_service(store)
    await first.start()
    handler = await first.start_run("hitl")
    await eventually(lambda: _asked(first, handler.handler_id), "the run waits for input")
    await first.stop()

    second = new_service(reopen(store, make_store))
    async with second.running_context():
        row = await second.get(handler.handler_id)
        assert (row.status, row.error) == ("running", None)
        await second.send_event(handler.handler_id, AnswerEvent(answer="later"))
        done = await asyncio.wait_for(second.wait_for(handler.handler_id), 10)
        assert done.result is not None
        assert done.result.result == "got later"


async def test_host_code_may_pass_a_base_start_event_to_a_custom_start_class(
    make_store: StoreFactory,
) -> None:
    service = WorkflowService(make_store())
    service.add_workflow("custom", CustomWorkflow())
    async with service.running_context():
        done = await service.run("custom", StartEvent(topic="bees", count=2))
        with pytest.raises(BadEventError, match="topic"):
            await service.start_run("custom", StartEvent(count=2))
    assert done.result is not None
    assert done.result == MyStop(answer=84, topic="bees")


class _UnreachableWrites(MemoryWorkflowStore):
    """A store whose writes fail as if its database were away, once told to."""

    down = False

    async def save_progress(self, batch: Any) -> set[str]:
        if self.down:
            raise StoreUnavailableError("the database is away")
        return await super().save_progress(batch)

    async def release_handlers(self, owner_id: str, handler_ids: Any) -> None:
        if self.down:
            raise StoreUnavailableError("the database is away")
        await super().release_handlers(owner_id, handler_ids)


async def test_a_waiting_caller_is_answered_when_stopping_cannot_write_the_release() -> None:
    store = _UnreachableWrites()
    service = new_service(store)
    await service.start()
    slow = await service.start_run("slow", StartEvent(seconds=30))
    await eventually(lambda: _has_started(service, slow.handler_id), "the slow step started")
    waiting = asyncio.ensure_future(service.wait_for(slow.handler_id))
    await eventually(
        _true(lambda: parked_in(waiting, "Waiter._written")), "the caller waits for the run"
    )
    store.down = True

    service.begin_stop()
    with pytest.raises(StoreUnavailableError):
        # Answered within stop_timeout, though the release is never written.
        await asyncio.wait_for(waiting, CONFIG.stop_timeout + CONFIG.poll_interval * 10)
    store.down = False
    await service.stop()
