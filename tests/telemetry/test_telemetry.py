"""``telemetry``: the service's reports turned into tags, spans, metrics and log lines.

Driven here as the run service drives it, with the real SDK's in-memory
exporter and reader; the same reports over HTTP are ``test_traces.py`` and
``test_metrics.py``, and without the OpenTelemetry API ``test_without_otel.py``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from llama_index_instrumentation.dispatcher import active_instrument_tags
from opentelemetry.sdk.trace import ReadableSpan

from llama_workflows_asgi import telemetry
from llama_workflows_asgi.store.base import PersistentHandler
from llama_workflows_asgi.telemetry import (
    HANDLER_ID_TAG,
    RUN_ID_TAG,
    TRACE_CONTEXT_KEY,
    RunTelemetry,
    Telemetry,
)
from tests.support.factories import handler
from tests.telemetry.conftest import Sdk, points, total

RUNS = "llama_workflows_asgi.runs"


def unique_row(**fields: Any) -> PersistentHandler:
    """A handler of a workflow name no other test reports."""
    values: dict[str, Any] = {"workflow_name": f"wf-{uuid.uuid4().hex[:8]}"} | fields
    return handler(uuid.uuid4().hex[:12], **values)


@dataclass
class LiveRun:
    """A live run as the gauges read it."""

    row: PersistentHandler
    idle_since: float | None = None


def spans_named(sdk: Sdk, name: str) -> list[ReadableSpan]:
    return [s for s in sdk.spans.get_finished_spans() if s.name == name]


def run_states(caplog: pytest.LogCaptureFixture, handler_id: str) -> list[str]:
    return [
        str(getattr(r, "run_state", ""))
        for r in caplog.records
        if r.name == RUNS and getattr(r, "handler_id", None) == handler_id
    ]


def test_an_accepted_run_is_a_child_of_the_request_and_records_its_trace_context(
    sdk: Sdk,
) -> None:
    reports = Telemetry()
    assert reports.enabled
    row = unique_row(start_event={"topic": "t"})
    tracer = sdk.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        run = reports.accepted(row)
    run.ended("completed")
    (span,) = spans_named(sdk, f"workflow {row.workflow_name}")
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    assert row.start_event is not None
    assert row.start_event["topic"] == "t"
    assert row.start_event[TRACE_CONTEXT_KEY]["traceparent"].split("-")[2] == (
        f"{span.context.span_id:016x}"
    )
    # A run without a start event document gets no trace context written into one.
    bare = unique_row()
    reports.accepted(bare).ended("completed")
    assert bare.start_event is None


async def test_steps_execute_with_the_runs_tags_and_span(
    sdk: Sdk, caplog: pytest.LogCaptureFixture
) -> None:
    reports = Telemetry()
    row = unique_row()
    run = reports.accepted(row)
    seen: list[dict[str, Any]] = []

    async def step() -> str:
        tags = active_instrument_tags.get()
        seen.append({"handler": tags.get(HANDLER_ID_TAG), "run": tags.get(RUN_ID_TAG)})
        return "ok"

    outside = step()
    assert telemetry.step_coroutine("s", 0, outside) is outside  # no run executing here
    outside.close()
    with caplog.at_level(logging.INFO, RUNS):
        for _ in range(2):  # a run announced once, however often its engine starts
            with run.executing():
                # Tasks the engine starts copy this context.
                task = asyncio.ensure_future(telemetry.step_coroutine("greet", 1, step()))
            assert await task == "ok"
        run.ended("completed")
        run.ended("failed", "too late")  # only the first end counts
    assert seen == [{"handler": row.handler_id, "run": row.run_id}] * 2
    (run_span,) = spans_named(sdk, f"workflow {row.workflow_name}")
    steps = spans_named(sdk, "step greet")
    assert [s.parent.span_id for s in steps if s.parent] == [run_span.context.span_id] * 2
    assert dict(run_span.attributes or {})["workflow.status"] == "completed"
    name = row.workflow_name
    assert total(points(sdk, "workflow.run.started", workflow__name=name)) == 1
    assert total(points(sdk, "workflow.run.finished", workflow__name=name)) == 1
    assert run_states(caplog, row.handler_id) == ["started", "completed"]
    assert active_instrument_tags.get().get(HANDLER_ID_TAG) is None


def test_a_resume_links_to_the_stored_trace_and_says_whether_it_adopted(
    sdk: Sdk, caplog: pytest.LogCaptureFixture
) -> None:
    reports = Telemetry()
    first = unique_row(start_event={})
    reports.accepted(first).ended("released")
    (origin,) = spans_named(sdk, f"workflow {first.workflow_name}")
    with caplog.at_level(logging.INFO, RUNS):
        reports.resumed(first, previous_owner=None).ended("released")
        adopted = first.model_copy(update={"resume_attempts": 1})
        reports.resumed(adopted, previous_owner="host:2:Lcrashed").ended("completed")
    _, resumed, taken = spans_named(sdk, f"workflow {first.workflow_name}")
    for span in (resumed, taken):
        assert [link.context.span_id for link in span.links] == [origin.context.span_id]
    assert [e.name for e in resumed.events] == ["workflow.resumed"]
    assert [e.name for e in taken.events] == ["workflow.adopted"]
    name = first.workflow_name
    assert total(points(sdk, "workflow.lease.adoptions", workflow__name=name)) == 1
    assert total(points(sdk, "workflow.run.resumes", workflow__name=name)) == 2
    assert run_states(caplog, first.handler_id) == [
        "resumed",
        "released",
        "adopted",
        "completed",
    ]


def test_a_queued_run_is_logged_without_a_span(sdk: Sdk, caplog: pytest.LogCaptureFixture) -> None:
    row = unique_row()
    with caplog.at_level(logging.INFO, RUNS):
        Telemetry().queued(row)
    assert run_states(caplog, row.handler_id) == ["queued"]
    assert spans_named(sdk, f"workflow {row.workflow_name}") == []


@dataclass
class Watched:
    """A service's runs, writer and ownership rounds, as the gauges read them."""

    live: list[LiveRun]
    unwritten_since: float | None
    queued: dict[str, int]

    def values(self) -> list[LiveRun]:
        return self.live


def test_the_watched_service_answers_the_gauges(sdk: Sdk) -> None:
    reports = Telemetry()
    assert (reports.live_runs(), reports.unwritten_since(), reports.queued_runs()) == ([], None, {})
    row = unique_row()
    since = time.monotonic()
    live = [LiveRun(row), LiveRun(row, idle_since=since)]
    watched = Watched(live, since, {row.workflow_name: 3})
    reports.watch(watched, watched, watched)
    assert reports.live_runs() == live
    assert reports.unwritten_since() == since
    assert reports.queued_runs() == {row.workflow_name: 3}
    assert total(points(sdk, "workflow.run.live", workflow__name=row.workflow_name)) == 1
    assert total(points(sdk, "workflow.run.waiting", workflow__name=row.workflow_name)) == 1
    assert total(points(sdk, "workflow.run.queued", workflow__name=row.workflow_name)) == 3
    del reports
    gc.collect()  # a dropped service stops being reported
    assert points(sdk, "workflow.run.live", workflow__name=row.workflow_name) == []


def test_a_run_without_a_backend_still_logs_and_tags(caplog: pytest.LogCaptureFixture) -> None:
    row = unique_row()
    run = RunTelemetry(row)
    with caplog.at_level(logging.INFO, RUNS):
        with run.executing():
            assert active_instrument_tags.get()[RUN_ID_TAG] == row.run_id
        run.ended("lost")
    assert run_states(caplog, row.handler_id) == ["lost"]
    assert run.span is None


def test_writer_and_stream_reports(sdk: Sdk) -> None:
    commits = total(points(sdk, "workflow.writer.batch.size"))
    failures = total(points(sdk, "workflow.writer.commit.failures"))
    streams = total(points(sdk, "workflow.stream.open"))
    telemetry.batch_written(12, 0.003)
    telemetry.failed_batch()
    with telemetry.stream_open():
        assert total(points(sdk, "workflow.stream.open")) == streams + 1
    assert total(points(sdk, "workflow.stream.open")) == streams
    assert total(points(sdk, "workflow.writer.batch.size")) == commits + 1
    assert total(points(sdk, "workflow.writer.commit.failures")) == failures + 1
    with pytest.raises(RuntimeError), telemetry.stream_open():
        raise RuntimeError("the client went away")
    assert total(points(sdk, "workflow.stream.open")) == streams
