"""Spans, instrumentation tags and run logs of runs started over HTTP (real OpenTelemetry SDK)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.telemetry.conftest import Host, Sdk

pytestmark = pytest.mark.timeout(60)


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
    caplog.set_level(logging.INFO, logger="llama_workflows_asgi")
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
    # Nothing else at INFO: no line per event or step.
    ours = [r for r in caplog.records if r.name.startswith("llama_workflows_asgi")]
    assert {r.name for r in ours} == {"llama_workflows_asgi.runs"}
