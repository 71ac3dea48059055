"""Capacity: ``max_live_runs`` queues runs in the database, ``max_queued_runs`` refuses more.

Every test runs on the memory store and SQLite (the two-process PostgreSQL
case is ``tests/durability/test_capacity.py``). The ownership rounds are set
far apart (``poll_interval=30``), so a queued run claimed here was claimed
because room freed up, not by a round.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from workflows import Workflow, step
from workflows.events import StartEvent, StopEvent

from llama_workflows_asgi import (
    HandlerQuery,
    MemoryWorkflowStore,
    ServiceConfig,
    StoreUnavailableError,
    WorkflowServer,
    WorkflowService,
)
from llama_workflows_asgi.errors import RunQueueFullError
from tests.support.stores import StoreFactory

pytestmark = pytest.mark.timeout(60)

GATES: dict[str, asyncio.Event] = {}
STARTED: list[str] = []


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class GateStart(StartEvent):
    name: str


class Gated(Workflow):
    """Records that it began, then holds until its gate opens."""

    @step
    async def hold(self, ev: GateStart) -> StopEvent:
        STARTED.append(ev.name)
        await GATES[ev.name].wait()
        return StopEvent(result=ev.name)


def config(**capacity: int | None) -> ServiceConfig:
    return ServiceConfig(lease_ttl=100, poll_interval=30, stream_poll_interval=0.02, **capacity)  # type: ignore[arg-type]


def names(count: int) -> list[str]:
    prefix = uuid.uuid4().hex[:8]
    found = [f"{prefix}-{i}" for i in range(count)]
    for name in found:
        GATES[name] = asyncio.Event()
    return found


async def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


def started(batch: list[str]) -> list[str]:
    return [name for name in STARTED if name in batch]


@pytest.fixture
async def service(make_store: StoreFactory) -> AsyncIterator[WorkflowService]:
    service = WorkflowService(make_store(), config=config(max_live_runs=2, max_queued_runs=3))
    service.add_workflow("gated", Gated(timeout=None))
    async with service.running_context():
        await service._supervisor.first_round.wait()
        yield service


async def test_a_full_service_queues_unowned_and_claims_oldest_first_as_room_frees(
    service: WorkflowService,
) -> None:
    batch = names(5)
    handlers = [await service.start_run("gated", GateStart(name=n)) for n in batch]
    assert [h.status for h in handlers] == ["running"] * 5
    await eventually(lambda: len(started(batch)) == 2, "two runs execute")
    assert len(service._runs) == 2
    rows = await service.store.query(HandlerQuery(handler_id_in=[h.handler_id for h in handlers]))
    owners = {row.handler_id: row.owner_id for row in rows}
    assert [owners[h.handler_id] for h in handlers[2:]] == [None, None, None]
    assert sum((await service.store.count_queued()).values()) == 3

    for index, name in enumerate(batch):
        GATES[name].set()  # room frees: the oldest waiting run is claimed at once
        done = await service.wait_for(handlers[index].handler_id)
        assert done.status == "completed"
        expected = min(index + 3, 5)
        await eventually(lambda n=expected: len(started(batch)) == n, f"{expected} runs began")
        assert len(service._runs) <= 2
    assert started(batch) == batch  # in the order they were started
    assert await service.store.count_queued() == {}


async def test_refused_beyond_max_queued_runs_writing_nothing(service: WorkflowService) -> None:
    batch = names(6)
    for name in batch[:5]:
        await service.start_run("gated", GateStart(name=name))
    before = await service.store.query(HandlerQuery(load_ctx=False))
    with pytest.raises(RunQueueFullError) as refused:
        await service.start_run("gated", GateStart(name=batch[5]), handler_id="refused-one")
    assert isinstance(refused.value, StoreUnavailableError)
    assert refused.value.retry_after == service.config.queue_retry_after
    after = await service.store.query(HandlerQuery(load_ctx=False))
    assert [h.handler_id for h in after] == [h.handler_id for h in before]
    for name in batch:
        GATES[name].set()


async def test_run_and_idempotent_replays_work_while_queued(service: WorkflowService) -> None:
    batch = names(4)
    for name in batch[:2]:
        await service.start_run("gated", GateStart(name=name))
    first = await service.start_run("gated", GateStart(name=batch[2]), idempotency_key="k1")
    again = await service.start_run("gated", GateStart(name=batch[2]), idempotency_key="k1")
    assert again.handler_id == first.handler_id
    assert again.status == "running"
    waiting = asyncio.ensure_future(service.run("gated", GateStart(name=batch[3])))
    await eventually(lambda: sum(1 for r in STARTED if r in batch) == 2, "two live")
    for name in batch:
        GATES[name].set()
    result = await asyncio.wait_for(waiting, 20)
    assert result.status == "completed"
    assert result.result is not None
    assert result.result.result == batch[3]
    assert (await service.wait_for(first.handler_id)).status == "completed"
    rows = await service.store.query(HandlerQuery(load_ctx=False))
    assert len(rows) == 4  # the replay wrote nothing


async def test_over_http_a_queued_start_looks_like_any_start_and_refusals_are_503(
    make_store: StoreFactory,
) -> None:
    server = WorkflowServer(make_store(), config=config(max_live_runs=1, max_queued_runs=1))
    server.add_workflow("gated", Gated(timeout=None))
    batch = names(4)
    transport = httpx.ASGITransport(app=server.app)
    lifespan = server.router.lifespan_context(server.app)
    client = httpx.AsyncClient(transport=transport, base_url="http://test")
    async with lifespan, client as http:

        async def start(name: str, key: str | None = None) -> httpx.Response:
            headers = {"Idempotency-Key": key} if key else {}
            body = {"start_event": {"name": name}}
            return await http.post("/workflows/gated/run-nowait", json=body, headers=headers)

        live, queued = await start(batch[0]), await start(batch[1], key="q")
        refused = await start(batch[2])
        replay = await start(batch[1], key="q")
        listed = (await http.get("/handlers")).json()["handlers"]
        for name in batch[:2]:
            GATES[name].set()
        await server.service.wait_for(queued.json()["handler_id"])
        GATES[batch[3]].set()
        body = {"start_event": {"name": batch[3]}}
        done = await http.post("/workflows/gated/run", json=body)
    assert live.status_code == queued.status_code == replay.status_code == 200
    assert list(queued.json()) == list(live.json())
    assert queued.json()["status"] == "running"
    assert replay.json() == queued.json()
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert "capacity" in refused.json()["detail"]
    assert sorted(h["handler_id"] for h in listed) == sorted(
        [live.json()["handler_id"], queued.json()["handler_id"]]
    )
    assert done.status_code == 200


async def test_a_queued_run_is_claimed_by_a_second_service_with_room(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    shared = store if isinstance(store, MemoryWorkflowStore) else make_store()  # one database
    full = WorkflowService(store, config=config(max_live_runs=1))
    other = WorkflowService(shared, config=config(max_live_runs=1))
    for service in (full, other):
        service.add_workflow("gated", Gated(timeout=None))
    batch = names(3)
    async with full.running_context(), other.running_context():
        await full._supervisor.first_round.wait()
        await other._supervisor.first_round.wait()
        for name in batch:
            await full.start_run("gated", GateStart(name=name))
        assert await other._supervisor.adopt() == 1  # as its ownership round would
        await eventually(lambda: len(started(batch)) == 2, "the second service runs one")
        assert set(started(batch)) == set(batch[:2])
        assert len(full._runs) == len(other._runs) == 1
        assert await other._supervisor.adopt() == 0  # full now too
        for name in batch:
            GATES[name].set()
        await eventually(lambda: len(started(batch)) == 3, "the last one runs")


def test_capacity_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_live_runs"):
        ServiceConfig(max_live_runs=0)
    with pytest.raises(ValueError, match="max_queued_runs"):
        ServiceConfig(max_live_runs=1, max_queued_runs=-1)
    with pytest.raises(ValueError, match="max_queued_runs needs max_live_runs"):
        ServiceConfig(max_queued_runs=5)
    with pytest.raises(ValueError, match="queue_retry_after"):
        ServiceConfig(queue_retry_after=0)
    assert ServiceConfig(max_live_runs=1, max_queued_runs=0).max_queued_runs == 0
