"""Metrics through the OpenTelemetry API, read by the SDK's in-memory reader and by Prometheus."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from workflows import Workflow, step
from workflows.events import StartEvent, StopEvent

from llama_workflows_asgi import (
    MemoryWorkflowStore,
    ServiceConfig,
    StoreUnavailableError,
    WorkflowService,
)
from llama_workflows_asgi.store.base import RunProgress
from tests.telemetry.conftest import Host, Sdk, points, total

pytestmark = pytest.mark.timeout(60)

_GATES: dict[str, asyncio.Event] = {}


async def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


async def test_a_run_over_http_records_counters_and_durations(host: Host, sdk: Sdk) -> None:
    name = host.names["tagged"]
    assert (await host.http.post(f"/workflows/{name}/run", json={})).status_code == 200
    failed = await host.http.post(f"/workflows/{host.names['broken']}/run", json={})
    assert failed.status_code == 500

    await eventually(
        lambda: total(points(sdk, "workflow.run.finished", workflow__name=name)) == 1,
        "the run is counted",
    )
    assert total(points(sdk, "workflow.run.started", workflow__name=name)) == 1
    assert (
        total(
            points(sdk, "workflow.run.finished", workflow__status="completed", workflow__name=name)
        )
        == 1
    )
    broken = host.names["broken"]
    assert (
        total(
            points(sdk, "workflow.run.finished", workflow__status="failed", workflow__name=broken)
        )
        == 1
    )
    (duration,) = points(sdk, "workflow.run.duration", workflow__name=name)
    assert duration.count == 1
    assert duration.sum > 0
    for step_name in ("first", "second"):
        (step_duration,) = points(
            sdk, "workflow.step.duration", workflow__name=name, workflow__step__name=step_name
        )
        assert step_duration.count == 1
    (explode,) = points(sdk, "workflow.step.duration", workflow__name=broken)
    assert dict(explode.attributes)["error.type"] == "ValueError"
    assert total(points(sdk, "workflow.writer.batch.size")) >= 1
    assert total(points(sdk, "workflow.writer.commit.duration")) >= 1


async def test_a_resume_is_counted(host: Host, sdk: Sdk) -> None:
    name = host.names["asking"]
    handler_id = (await host.http.post(f"/workflows/{name}/run-nowait", json={})).json()[
        "handler_id"
    ]
    await eventually(
        lambda: (
            total(
                points(
                    sdk, "workflow.run.finished", workflow__status="released", workflow__name=name
                )
            )
            == 1
        ),
        "the idle run is released",
    )
    answer = {"event": {"type": "AnswerEvent", "value": {"answer": "Ada"}}}
    assert (await host.http.post(f"/events/{handler_id}", json=answer)).status_code == 200
    await eventually(
        lambda: total(points(sdk, "workflow.run.resumes", workflow__name=name)) == 1,
        "the resume is counted",
    )
    assert (
        points(sdk, "workflow.run.resumes", workflow__name=name)[0].attributes[
            "workflow.resume.adopted"
        ]
        is False
    )
    assert points(sdk, "workflow.lease.adoptions", workflow__name=name) == []


async def test_prometheus_scrapes_the_metrics_over_http(host: Host, sdk: Sdk) -> None:
    name = host.names["tagged"]
    assert (await host.http.post(f"/workflows/{name}/run", json={})).status_code == 200
    await eventually(
        lambda: total(points(sdk, "workflow.run.finished", workflow__name=name)) == 1, "the run"
    )
    scraped = await host.http.get("/metrics/")
    assert scraped.status_code == 200
    lines = scraped.text.splitlines()
    finished = [
        line
        for line in lines
        if line.startswith("workflow_run_finished_total{") and f'workflow_name="{name}"' in line
    ]
    assert len(finished) == 1
    assert finished[0].endswith(" 1.0"), finished
    assert any(
        line.startswith("workflow_run_duration_seconds_count{") and name in line for line in lines
    )
    assert any(line.startswith("workflow_writer_commit_duration_seconds_bucket") for line in lines)
    assert any(line.startswith("workflow_writer_unwritten_age_seconds{") for line in lines)


class GatedWorkflow(Workflow):
    """Waits until its gate opens, then finishes."""

    @step
    async def wait(self, ev: StartEvent) -> StopEvent:
        await _GATES[ev.get("gate")].wait()
        return StopEvent(result="opened")


class HeldStore(MemoryWorkflowStore):
    """A memory store whose writes wait while ``open`` is cleared (a slow database),
    or fail as unavailable while ``failing`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.open.set()
        self.failing = False
        self.failed_at: list[float] = []

    async def save_progress(self, batch: Sequence[RunProgress]) -> set[str]:
        await self.open.wait()
        if self.failing:
            self.failed_at.append(time.monotonic())
            raise StoreUnavailableError("the database is away")
        return await super().save_progress(batch)


@pytest.fixture
async def gated() -> AsyncIterator[tuple[WorkflowService, HeldStore, str]]:
    name = f"gated-{uuid.uuid4().hex[:8]}"
    store = HeldStore()
    service = WorkflowService(store, config=ServiceConfig(idle_timeout=None))
    service.add_workflow(name, GatedWorkflow(timeout=None))
    async with service.running_context():
        yield service, store, name


async def test_gauges_report_live_runs_open_streams_and_the_unwritten_backlog(
    gated: tuple[WorkflowService, HeldStore, str], sdk: Sdk
) -> None:
    service, store, name = gated
    gate = uuid.uuid4().hex
    _GATES[gate] = asyncio.Event()
    streams_before = total(points(sdk, "workflow.stream.open"))
    handler = await service.start_run(name, StartEvent(gate=gate))  # type: ignore[call-arg]
    assert total(points(sdk, "workflow.run.live", workflow__name=name)) == 1
    assert points(sdk, "workflow.run.waiting", workflow__name=name) == []

    stream = await service.open_stream(handler.handler_id, after=-1)
    assert stream is not None
    reading = asyncio.ensure_future(_drain(stream))
    await eventually(
        lambda: total(points(sdk, "workflow.stream.open")) == streams_before + 1, "stream open"
    )

    store.open.clear()  # the database stalls: the run's outcome stays unwritten
    _GATES[gate].set()
    await eventually(lambda: service._runs[handler.handler_id].outcome is not None, "run ends")
    (age,) = points(sdk, "workflow.writer.unwritten.age")
    assert age.value > 0
    store.open.set()
    await asyncio.wait_for(reading, 10)
    (age,) = points(sdk, "workflow.writer.unwritten.age")
    assert age.value == 0
    assert total(points(sdk, "workflow.stream.open")) == streams_before
    assert points(sdk, "workflow.run.live", workflow__name=name) == []


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def test_failed_writes_are_counted_and_keep_the_backlog_age(
    gated: tuple[WorkflowService, HeldStore, str], sdk: Sdk
) -> None:
    service, store, name = gated
    gate = uuid.uuid4().hex
    _GATES[gate] = asyncio.Event()
    failures_before = total(points(sdk, "workflow.writer.commit.failures"))
    await service.start_run(name, StartEvent(gate=gate))  # type: ignore[call-arg]
    store.failing = True
    _GATES[gate].set()
    await eventually(lambda: len(store.failed_at) >= 2, "two failed writes")
    # The backlog dates from before the first failed write, not from its retry.
    since = service._writer.unwritten_since
    assert since is not None
    assert since < store.failed_at[0]
    assert total(points(sdk, "workflow.writer.commit.failures")) >= failures_before + 2
    store.failing = False
    await eventually(lambda: service._writer.unwritten_since is None, "the backlog is written")


async def test_queued_gauge_counts_runs_waiting_for_room(sdk: Sdk) -> None:
    name = f"queued-{uuid.uuid4().hex[:8]}"
    config = ServiceConfig(max_live_runs=1, poll_interval=0.05, lease_ttl=1.0)
    service = WorkflowService(MemoryWorkflowStore(), config=config)
    service.add_workflow(name, GatedWorkflow(timeout=None))
    gates = [uuid.uuid4().hex for _ in range(3)]
    for gate in gates:
        _GATES[gate] = asyncio.Event()
    async with service.running_context():
        handlers = [
            await service.start_run(name, StartEvent(gate=gate))  # type: ignore[call-arg]
            for gate in gates
        ]
        await eventually(
            lambda: total(points(sdk, "workflow.run.queued", workflow__name=name)) == 2,
            "two runs are counted as queued",
        )
        assert total(points(sdk, "workflow.run.live", workflow__name=name)) == 1
        for gate in gates:
            _GATES[gate].set()
        for handler in handlers:
            assert (await service.wait_for(handler.handler_id)).status == "completed"
        await eventually(
            lambda: points(sdk, "workflow.run.queued", workflow__name=name) == [],
            "nothing is queued any more",
        )
