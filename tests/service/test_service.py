"""``service.service``: the facade's own checks, before any room works.

A call is admitted only while the service runs, is not stopping, holds its
liveness token and renews its heartbeat in time; a handler is found only for
its caller when the service is scoped; raw inputs (a handler id, an
idempotency key) are checked before anything is written. Real stores only: the
memory store, and a SQLite file where a restart must find what was written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from workflows.events import StartEvent

from llama_workflows_asgi import (
    BadRequestError,
    ConflictError,
    HandlerNotFoundError,
    HandlerQuery,
    MemoryWorkflowStore,
    ServiceConfig,
    StoreUnavailableError,
    WorkflowNotFoundError,
    WorkflowService,
)
from tests.service.conftest import FAST, serving, sqlite_store
from tests.support.waiting import eventually
from tests.support.workflows import AnswerEvent, make_workflows

pytestmark = pytest.mark.timeout(30)


Call = Callable[[], Awaitable[Any]]


def refusal(service: WorkflowService, handler_id: str = "any") -> list[Call]:
    """Every call that takes on new work, for ``handler_id``."""
    return [
        lambda: service.start_run("hitl"),
        lambda: service.send_event(handler_id, AnswerEvent(answer="x")),
        lambda: service.retry(handler_id),
    ]


async def refused_with(call: Call) -> StoreUnavailableError:
    with pytest.raises(StoreUnavailableError) as caught:
        await call()
    return caught.value


async def rows(service: WorkflowService) -> int:
    return len(await service.store.query(HandlerQuery(load_ctx=False)))


async def test_a_service_not_started_refuses_new_work_with_a_longer_retry() -> None:
    service = serving(MemoryWorkflowStore())
    for call in refusal(service):
        error = await refused_with(call)
        assert (str(error), error.retry_after) == ("The workflow service is not running", 5)
    with pytest.raises(WorkflowNotFoundError):  # the workflow is looked up first: a 404
        await service.start_run("nope")
    assert await service.health_problem() == "The workflow service is not running"
    assert not await service.healthy()
    service.begin_stop()  # nothing to stop
    assert not service.draining
    assert await rows(service) == 0


async def test_a_restarted_service_on_a_sqlite_file_resumes_what_it_released(
    sqlite_url: str,
) -> None:
    service = serving(sqlite_store(sqlite_url))
    async with service.running_context():
        started = await service.start_run("hitl")
    assert started.handler_id not in service._runs
    assert (await service.get(started.handler_id)).owner_id is None  # released on stop
    async with service.running_context():
        # Released while it waited for input: the event claims it back from its checkpoint.
        await service.send_event(started.handler_id, AnswerEvent(answer="back"))
        done = await service.wait_for(started.handler_id)
    assert (done.status, done.error) == ("completed", None)


async def test_once_a_stop_begins_new_work_and_streams_are_refused() -> None:
    async with serving(MemoryWorkflowStore()).running_context() as service:
        handler = await service.start_run("hitl")
        service.begin_stop()
        service.begin_stop()  # idempotent: one release
        assert service.draining
        for call in [*refusal(service, handler.handler_id), lambda: open_any(service)]:
            error = await refused_with(call)
            assert "shutting down" in str(error)
            assert error.retry_after == 1
        assert await service.health_problem() == "The workflow service is stopping"
        await eventually(lambda: service.drained, "every local run is released")
        # Reads go on while stopping: the handler is still there, released.
        assert (await service.get(handler.handler_id)).owner_id is None
    assert not service.running


async def open_any(service: WorkflowService) -> Any:
    return await service.open_stream("any")


async def test_a_lost_liveness_token_refuses_new_work_and_stops_local_runs() -> None:
    store = MemoryWorkflowStore()
    async with serving(store).running_context() as service:
        handler = await service.start_run("hitl")
        await eventually(lambda: handler.handler_id in service._runs, "the run is live here")
        # As a store whose token is lost sets it, then tells its holder (PostgreSQL:
        # tests/service/test_liveness_loss.py ends the session itself).
        store.liveness.held = False
        service._lifecycle.on_liveness(False)
        for call in refusal(service, handler.handler_id):
            error = await refused_with(call)
            assert "lost its database session" in str(error)
            assert error.retry_after == 1
        problem = await service.health_problem()
        assert problem is not None
        assert "lost its database session" in problem
        live = service._runs[handler.handler_id]
        await eventually(lambda: live.finished.is_set(), "its engine stopped, writing nothing")
        assert (await service.get(handler.handler_id)).status == "running"
        store.liveness.held = True
        service._lifecycle.on_liveness(True)
        assert (await service.start_run("hitl")).status == "running"


async def test_a_late_heartbeat_refuses_new_runs() -> None:
    config = ServiceConfig(idle_timeout=None, lease_ttl=1.0, poll_interval=0.2)
    async with serving(MemoryWorkflowStore(), config).running_context() as service:
        await service._supervisor.stop()  # no round renews the heartbeat any more
        refusals: list[StoreUnavailableError] = []

        async def refused() -> bool:
            try:
                await service.start_run("hitl")
            except StoreUnavailableError as exc:
                refusals.append(exc)
                return True
            return False

        await eventually(refused, "a start is refused once the heartbeat is late")
        assert "heartbeat" in str(refusals[-1])
        assert refusals[-1].retry_after == 1
        before = await rows(service)
        assert await refused()
        assert await rows(service) == before


@pytest.fixture
async def scoped() -> AsyncIterator[WorkflowService]:
    service = WorkflowService(MemoryWorkflowStore(), config=FAST, scoped=True)
    for name, workflow in make_workflows().items():
        service.add_workflow(name, workflow)
    async with service.running_context():
        yield service


async def test_a_scoped_service_shows_a_handler_to_its_caller_only(
    scoped: WorkflowService,
) -> None:
    mine = await scoped.start_run("hitl", principal="alice")
    hid = mine.handler_id
    assert (await scoped.get(hid, principal="alice")).handler_id == hid
    answer = AnswerEvent(answer="no")
    for call in (
        lambda: scoped.get(hid, principal="bob"),
        lambda: scoped.send_event(hid, answer, principal="bob"),
        lambda: scoped.cancel(hid, principal="bob"),
        lambda: scoped.retry(hid, principal="bob"),
        lambda: scoped.open_stream(hid, principal="bob"),
        lambda: scoped.wait_for(hid, principal="bob"),  # at once, not when the run ends
    ):
        with pytest.raises(HandlerNotFoundError):
            await call()
    assert (await scoped.list_page(principal="bob")).handlers == []
    assert [h.handler_id for h in (await scoped.list_page(principal="alice")).handlers] == [hid]
    assert (await scoped.get(hid, principal="alice")).status == "running"  # bob changed nothing


async def test_one_idempotency_key_of_two_callers_names_two_handlers(
    scoped: WorkflowService,
) -> None:
    alice = await scoped.start_run("hitl", principal="alice", idempotency_key="k")
    bob = await scoped.start_run("hitl", principal="bob", idempotency_key="k")
    again = await scoped.start_run("hitl", principal="alice", idempotency_key="k")
    assert alice.handler_id != bob.handler_id
    assert again.handler_id == alice.handler_id


async def test_an_unscoped_service_ignores_the_principal(
    memory_service: WorkflowService,
) -> None:
    handler = await memory_service.start_run("hitl", principal="alice")
    assert (await memory_service.get(handler.handler_id, principal="bob")).principal == "alice"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"handler_id": "a/b"}, "Invalid handler_id"),
        ({"handler_id": ".."}, "Invalid handler_id"),
        ({"handler_id": "x" * 256}, "Invalid handler_id"),
        ({"idempotency_key": ""}, "Invalid Idempotency-Key"),
        ({"idempotency_key": "  "}, "Invalid Idempotency-Key"),
    ],
)
async def test_bad_raw_inputs_are_refused_before_anything_is_written(
    memory_service: WorkflowService, options: dict[str, str], message: str
) -> None:
    with pytest.raises(BadRequestError, match=message):
        await memory_service.start_run("hitl", **options)
    assert await rows(memory_service) == 0
    assert not memory_service._runs


async def test_an_event_for_a_finished_handler_is_a_conflict(
    memory_service: WorkflowService,
) -> None:
    done = await memory_service.run("greet", StartEvent(name="done"))
    with pytest.raises(ConflictError, match="already completed"):
        await memory_service.send_event(done.handler_id, {"type": "StartEvent", "value": {}})
