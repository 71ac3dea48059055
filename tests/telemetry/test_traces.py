"""Spans, instrumentation tags and run logs of runs started over HTTP (real OpenTelemetry SDK)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from llama_index_instrumentation.dispatcher import active_instrument_tags
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from workflows import Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi import ServiceConfig, SqlAlchemyWorkflowStore, workflow_router
from llama_workflows_asgi.telemetry import HANDLER_ID_TAG, RUN_ID_TAG
from tests.support.servers import serving
from tests.support.workflows import AnswerEvent, AskEvent
from tests.telemetry.conftest import Sdk

pytestmark = pytest.mark.timeout(60)


def step_tags() -> dict[str, Any]:
    """The instrumentation tags the current step executes with."""
    tags = active_instrument_tags.get()
    return {"handler_id": tags.get(HANDLER_ID_TAG), "run_id": tags.get(RUN_ID_TAG)}


class Middle(Event):
    tags: dict[str, Any]


class TaggedWorkflow(Workflow):
    """Two steps, each recording the tags it sees; the result holds both."""

    @step
    async def first(self, ev: StartEvent) -> Middle:
        return Middle(tags=step_tags())

    @step
    async def second(self, ev: Middle) -> StopEvent:
        return StopEvent(result={"tags": [ev.tags, step_tags()]})


class BrokenWorkflow(Workflow):
    @step
    async def explode(self, ev: StartEvent) -> StopEvent:
        raise ValueError("kaboom")


class AskingWorkflow(Workflow):
    """Asks a question; the answering step records its tags in the result."""

    @step
    async def ask(self, ev: StartEvent) -> AskEvent:
        return AskEvent(question="name?")

    @step
    async def done(self, ev: AnswerEvent) -> StopEvent:
        return StopEvent(result={"answer": ev.answer, "tags": step_tags()})


@dataclass
class Host:
    http: httpx.AsyncClient
    names: dict[str, str]  # test name -> registered (unique) workflow name


@pytest.fixture
async def host(sdk: Sdk, tmp_path: Path) -> AsyncIterator[Host]:
    """A host app with FastAPI instrumentation and the router, on real uvicorn."""
    suffix = uuid.uuid4().hex[:8]
    names = {n: f"{n}-{suffix}" for n in ("tagged", "broken", "asking")}
    workflows: dict[str, Workflow] = {
        names["tagged"]: TaggedWorkflow(),
        names["broken"]: BrokenWorkflow(),
        names["asking"]: AskingWorkflow(timeout=None),
    }
    config = ServiceConfig(idle_timeout=0.2, poll_interval=0.1, lease_ttl=3.0)
    store = SqlAlchemyWorkflowStore(f"sqlite+aiosqlite:///{tmp_path / 'otel.db'}")
    app = FastAPI()
    app.include_router(workflow_router(store, workflows=workflows, config=config))
    FastAPIInstrumentor.instrument_app(app, tracer_provider=sdk.tracer_provider)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield Host(http, names)


def spans_of(sdk: Sdk, handler_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in sdk.spans.get_finished_spans()
        if (s.attributes or {}).get("workflow.handler_id") == handler_id
    ]


async def wait_for_spans(
    sdk: Sdk, check: Callable[[list[ReadableSpan]], bool], what: str
) -> list[ReadableSpan]:
    deadline = time.monotonic() + 10
    while True:
        spans = list(sdk.spans.get_finished_spans())
        if check(spans):
            return spans
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {[s.name for s in spans]}")
        await asyncio.sleep(0.02)


def traced_headers() -> tuple[dict[str, str], trace.SpanContext]:
    """Headers carrying a client span's trace context (as an instrumented client sends)."""
    tracer = trace.get_tracer("tests.client")
    with tracer.start_as_current_span("client call", kind=SpanKind.CLIENT) as span:
        headers: dict[str, str] = {}
        inject(headers)
        return headers, span.get_span_context()


async def test_a_run_over_http_is_a_span_under_the_request_with_a_span_per_step(
    host: Host, sdk: Sdk
) -> None:
    headers, client = traced_headers()
    response = await host.http.post(
        f"/workflows/{host.names['tagged']}/run", json={}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    handler_id, run_id = body["handler_id"], body["run_id"]

    spans = await wait_for_spans(
        sdk, lambda s: any(x.name.startswith("workflow ") for x in s), "the run span"
    )
    (run,) = [s for s in spans_of(sdk, handler_id) if s.name.startswith("workflow ")]
    steps = sorted(
        (s for s in spans_of(sdk, handler_id) if s.name.startswith("step ")), key=lambda s: s.name
    )
    requests = [s for s in spans if s.kind == SpanKind.SERVER and s.context.trace_id]
    request = next(s for s in requests if run.parent and s.context.span_id == run.parent.span_id)

    # The request span continues the caller's trace; the run is its child.
    assert request.context.trace_id == client.trace_id
    assert run.context.trace_id == client.trace_id
    assert run.attributes is not None
    assert dict(run.attributes) == {
        "workflow.name": host.names["tagged"],
        "workflow.handler_id": handler_id,
        "workflow.run_id": run_id,
        "workflow.status": "completed",
    }
    assert run.status.status_code == StatusCode.UNSET
    assert [s.name for s in steps] == ["step first", "step second"]
    for s in steps:
        assert s.parent is not None
        assert s.parent.span_id == run.context.span_id
        assert s.attributes is not None
        assert s.attributes["workflow.run_id"] == run_id
    # Every step executed with the LlamaIndex instrumentation tags of the run.
    expected = {"handler_id": handler_id, "run_id": run_id}
    assert body["result"]["value"]["result"]["tags"] == [expected, expected]


async def test_a_failed_run_and_its_step_are_error_spans(host: Host, sdk: Sdk) -> None:
    response = await host.http.post(f"/workflows/{host.names['broken']}/run", json={})
    assert response.status_code == 500
    handler_id = response.json()["handler_id"]
    await wait_for_spans(sdk, lambda _: len(spans_of(sdk, handler_id)) >= 2, "the spans")
    by_name = {s.name: s for s in spans_of(sdk, handler_id)}
    run, explode = by_name[f"workflow {host.names['broken']}"], by_name["step explode"]
    assert run.status.status_code == StatusCode.ERROR
    assert run.attributes is not None
    assert run.attributes["workflow.status"] == "failed"
    assert "kaboom" in str(run.attributes["workflow.error"])
    assert explode.status.status_code == StatusCode.ERROR
    assert explode.attributes is not None
    assert explode.attributes["error.type"] == "ValueError"
    assert [e.name for e in explode.events] == ["exception"]


async def test_a_released_run_resumes_in_a_new_span_linked_to_the_first(
    host: Host, sdk: Sdk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llama_workflows_asgi.runs")
    name = host.names["asking"]
    handler = (await host.http.post(f"/workflows/{name}/run-nowait", json={})).json()
    handler_id, run_id = handler["handler_id"], handler["run_id"]

    # Idle for longer than the idle timeout: the run is released, its span ends.
    first = await wait_for_spans(
        sdk,
        lambda _: any(
            (s.attributes or {}).get("workflow.status") == "released"
            for s in spans_of(sdk, handler_id)
        ),
        "the released span",
    )
    assert first
    answer = {"event": {"type": "AnswerEvent", "value": {"answer": "Ada"}}}
    sent = await host.http.post(f"/events/{handler_id}", json=answer)
    assert sent.status_code == 200, sent.text
    done = await host.http.get(f"/results/{handler_id}")
    while done.status_code == 202:
        await asyncio.sleep(0.05)
        done = await host.http.get(f"/results/{handler_id}")
    assert done.json()["result"]["tags"] == {"handler_id": handler_id, "run_id": run_id}

    await wait_for_spans(
        sdk,
        lambda _: any(
            (s.attributes or {}).get("workflow.status") == "completed"
            for s in spans_of(sdk, handler_id)
        ),
        "the resumed span",
    )
    runs = [s for s in spans_of(sdk, handler_id) if s.name.startswith("workflow ")]
    released = next(
        s for s in runs if s.attributes and s.attributes["workflow.status"] == "released"
    )
    resumed = next(
        s for s in runs if s.attributes and s.attributes["workflow.status"] == "completed"
    )
    assert [e.name for e in resumed.events] == ["workflow.resumed"]
    assert [link.context.span_id for link in resumed.links] == [released.context.span_id]
    assert resumed.links[0].context.trace_id == released.context.trace_id
    done_step = next(s for s in spans_of(sdk, handler_id) if s.name == "step done")
    assert done_step.parent is not None
    assert done_step.parent.span_id == resumed.context.span_id

    states = [
        (r.run_state, r.levelname)  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "handler_id", None) == handler_id
    ]
    assert states == [
        ("started", "INFO"),
        ("released", "INFO"),
        ("resumed", "INFO"),
        ("completed", "INFO"),
    ]
    assert all(
        getattr(r, "run_id", None) == run_id and getattr(r, "workflow_name", None) == name
        for r in caplog.records
        if getattr(r, "handler_id", None) == handler_id
    )
