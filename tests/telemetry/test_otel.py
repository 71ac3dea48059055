"""``telemetry._otel``: the backend's spans and instruments, read back from the real SDK."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.metrics import _internal as metrics_api
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from workflows.events import StartEvent
from workflows.runtime.types.step_id import StepId

from llama_workflows_asgi._engine import StepWorkerFailed, TickStepResult
from llama_workflows_asgi.store.base import PersistentHandler
from llama_workflows_asgi.telemetry import RunTelemetry, _otel
from tests.support.factories import handler
from tests.telemetry.conftest import Sdk, points, total


def unique_row(**fields: Any) -> PersistentHandler:
    """A handler of a workflow name no other test reports."""
    return handler(uuid.uuid4().hex[:12], workflow_name=f"wf-{uuid.uuid4().hex[:8]}", **fields)


def finished(sdk: Sdk, name: str) -> ReadableSpan:
    (span,) = [s for s in sdk.spans.get_finished_spans() if s.name == name]
    return span


@pytest.fixture
def backend(sdk: Sdk) -> _otel.OtelBackend:
    return _otel.backend()


def test_one_backend_per_process(backend: _otel.OtelBackend) -> None:
    assert _otel.backend() is backend


def test_the_configured_providers_are_read_from_the_apis_globals(sdk: Sdk) -> None:
    # Read where the API keeps them, not through its getters (see _GlobalProvider).
    assert trace._TRACER_PROVIDER is sdk.tracer_provider
    assert not isinstance(metrics_api._METER_PROVIDER, metrics_api._ProxyMeterProvider)
    assert _otel.tracing()
    assert _otel.metering()


def test_a_run_span_carries_the_run_and_its_w3c_context(
    backend: _otel.OtelBackend, sdk: Sdk
) -> None:
    row = unique_row()
    span = backend.start_run(row, link=None)
    carrier = backend.carrier(span)
    backend.end_run(span, row.workflow_name, "completed", None, 0.5)
    done = finished(sdk, f"workflow {row.workflow_name}")
    assert dict(done.attributes or {}) == {
        "workflow.name": row.workflow_name,
        "workflow.handler_id": row.handler_id,
        "workflow.run_id": row.run_id,
        "workflow.status": "completed",
    }
    assert done.status.status_code is StatusCode.UNSET
    trace_id, span_id = f"{done.context.trace_id:032x}", f"{done.context.span_id:016x}"
    assert carrier["traceparent"].startswith(f"00-{trace_id}-{span_id}-")  # then the flags
    assert list(done.links) == []


def test_a_resumed_run_links_to_the_span_of_its_first_attempt(
    backend: _otel.OtelBackend, sdk: Sdk
) -> None:
    row = unique_row(resume_attempts=1)
    first = backend.start_run(row, link=None)
    carrier = backend.carrier(first)
    first.end()
    second = backend.start_run(row, link=carrier)
    backend.resumed(second, row, adopted=True, previous_owner="host:1:Lgone")
    backend.end_run(second, row.workflow_name, "completed", None, 0.1)
    first_span, second_span = (
        s for s in sdk.spans.get_finished_spans() if s.name == f"workflow {row.workflow_name}"
    )
    (link,) = second_span.links
    assert link.context.span_id == first_span.context.span_id
    assert dict(link.attributes or {}) == {"workflow.link": "resumed_from"}
    (adopted,) = second_span.events
    assert adopted.name == "workflow.adopted"
    assert dict(adopted.attributes or {}) == {
        "workflow.resume.attempt": 1,
        "workflow.resume.adopted": True,
        "workflow.previous_owner": "host:1:Lgone",
    }
    assert total(points(sdk, "workflow.lease.adoptions", workflow__name=row.workflow_name)) == 1
    resumes = points(sdk, "workflow.run.resumes", workflow__name=row.workflow_name)
    assert [dict(p.attributes)["workflow.resume.adopted"] for p in resumes] == [True]


def test_an_unreadable_trace_context_links_nothing(backend: _otel.OtelBackend, sdk: Sdk) -> None:
    row = unique_row()
    span = backend.start_run(row, link={"traceparent": "not-a-trace"})
    span.end()
    assert list(finished(sdk, f"workflow {row.workflow_name}").links) == []


def test_a_failed_run_is_an_error_span_with_a_bounded_message(
    backend: _otel.OtelBackend, sdk: Sdk
) -> None:
    row = unique_row()
    backend.run_started(row.workflow_name)
    span = backend.start_run(row, link=None)
    backend.end_run(span, row.workflow_name, "failed", "x" * 5000, 2.0)
    done = finished(sdk, f"workflow {row.workflow_name}")
    assert done.status.status_code is StatusCode.ERROR
    assert done.status.description == "x" * 1024
    attributes = dict(done.attributes or {})
    assert attributes["error.type"] == "workflow_failed"
    assert attributes["workflow.error"] == "x" * 1024
    name = row.workflow_name
    assert total(points(sdk, "workflow.run.started", workflow__name=name)) == 1
    assert total(points(sdk, "workflow.run.finished", workflow__name=name)) == 1
    (duration,) = points(sdk, "workflow.run.duration", workflow__name=name)
    assert (duration.count, duration.sum) == (1, 2.0)
    assert dict(duration.attributes)["workflow.status"] == "failed"


def running(row: PersistentHandler, backend: _otel.OtelBackend) -> RunTelemetry:
    run = RunTelemetry(row, backend)
    run.span = backend.start_run(row, link=None)
    return run


async def test_a_step_is_a_child_span_timed_by_step_name(
    backend: _otel.OtelBackend, sdk: Sdk
) -> None:
    row = unique_row()
    run = running(row, backend)

    async def step() -> str:
        return "done"

    with backend.current(run.span):
        assert await backend.step(run, "greet", 3, step()) == "done"
    run.span.end()
    done = finished(sdk, "step greet")
    assert done.parent is not None
    assert done.parent.span_id == run.span.get_span_context().span_id
    assert dict(done.attributes or {})["workflow.step.worker"] == 3
    assert done.status.status_code is StatusCode.UNSET
    timed = points(sdk, "workflow.step.duration", workflow__name=row.workflow_name)
    assert [(p.count, dict(p.attributes)["workflow.step.name"]) for p in timed] == [(1, "greet")]


async def test_a_raising_step_and_a_step_the_engine_caught_are_errors(
    backend: _otel.OtelBackend, sdk: Sdk
) -> None:
    row = unique_row()
    run = running(row, backend)

    async def raising() -> None:
        raise ValueError("kaboom")

    async def caught() -> TickStepResult[Any]:
        failure = StepWorkerFailed(exception=KeyError("missing"), failed_at=time.time())
        return TickStepResult(
            step_id=StepId((), "caught"), worker_id=0, event=StartEvent(), result=[failure]
        )

    with pytest.raises(ValueError, match="kaboom"):
        await backend.step(run, "raising", 0, raising())
    result = await backend.step(run, "caught", 0, caught())
    assert isinstance(result, TickStepResult)
    for name, error_type in [("raising", "ValueError"), ("caught", "KeyError")]:
        done = finished(sdk, f"step {name}")
        assert done.status.status_code is StatusCode.ERROR
        assert dict(done.attributes or {})["error.type"] == error_type
        assert [e.name for e in done.events] == ["exception"]
        (timed,) = points(sdk, "workflow.step.duration", workflow__step__name=name)
        assert dict(timed.attributes)["error.type"] == error_type
    run.span.end()


async def test_a_cancelled_step_is_marked_not_failed(backend: _otel.OtelBackend, sdk: Sdk) -> None:
    run = running(unique_row(), backend)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(backend.step(run, "forever", 0, forever()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done = finished(sdk, "step forever")
    assert dict(done.attributes or {})["workflow.step.cancelled"] is True
    assert done.status.status_code is StatusCode.UNSET
    run.span.end()


@dataclass
class LiveRun:
    row: PersistentHandler
    idle_since: datetime | None = None


@dataclass(eq=False)
class Source:
    """A service as the gauges see it."""

    runs: Sequence[LiveRun]
    since: float | None = None
    queued: Mapping[str, int] | None = None

    def live_runs(self) -> Sequence[LiveRun]:
        return self.runs

    def unwritten_since(self) -> float | None:
        return self.since

    def queued_runs(self) -> Mapping[str, int]:
        return self.queued or {}


def test_gauges_report_every_watched_source_while_it_lives(
    backend: _otel.OtelBackend, sdk: Sdk
) -> None:
    row = unique_row()
    name = row.workflow_name
    idle = LiveRun(row, idle_since=datetime.now())
    first = Source([LiveRun(row), LiveRun(row), idle], queued={name: 4})
    second = Source([LiveRun(row)], since=time.monotonic() - 30, queued={name: 2})
    backend.watch(first)  # type: ignore[arg-type]
    backend.watch(second)  # type: ignore[arg-type]
    assert total(points(sdk, "workflow.run.live", workflow__name=name)) == 3
    assert total(points(sdk, "workflow.run.waiting", workflow__name=name)) == 1
    # Replicas of one database see the same queue: the largest figure, not the sum.
    assert total(points(sdk, "workflow.run.queued", workflow__name=name)) == 4
    (age,) = points(sdk, "workflow.writer.unwritten.age")
    assert age.value >= 30
    del first, second
    gc.collect()
    assert points(sdk, "workflow.run.live", workflow__name=name) == []
    assert points(sdk, "workflow.run.queued", workflow__name=name) == []


def test_writer_and_stream_instruments(backend: _otel.OtelBackend, sdk: Sdk) -> None:
    commits_before = total(points(sdk, "workflow.writer.commit.duration"))
    failures_before = total(points(sdk, "workflow.writer.commit.failures"))
    streams_before = total(points(sdk, "workflow.stream.open"))
    backend.batch_written(7, 0.002)
    backend.failed_batch()
    backend.streams(1)
    assert total(points(sdk, "workflow.writer.commit.duration")) == commits_before + 1
    assert total(points(sdk, "workflow.writer.commit.failures")) == failures_before + 1
    assert total(points(sdk, "workflow.stream.open")) == streams_before + 1
    backend.streams(-1)
    assert total(points(sdk, "workflow.stream.open")) == streams_before
