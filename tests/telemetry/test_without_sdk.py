"""With the OpenTelemetry API but no SDK configured: no spans are made, a caller's context is kept.

The API alone records nothing, so a run starts no span and its steps are not
wrapped; a trace context propagated to the caller is still recorded in the
start event, and an SDK configured later is used from the next run on. The
test suite installs the SDK once per process (``conftest.py``), so this runs
in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)

SCRIPT = textwrap.dedent(
    """
    import asyncio, json
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
    from llama_workflows_asgi.telemetry import Telemetry, step_coroutine
    from tests.support.factories import handler

    def row(name):
        return handler(name, start_event={"value": {}})

    reports = Telemetry()
    row_plain = row("plain")
    plain = reports.accepted(row_plain)
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(remote)):
        row_in_trace = row("in-trace")
        in_trace = reports.accepted(row_in_trace)

    async def step():
        return "done"

    async def wrapped(run):
        with run.executing():
            coro = step()
            same = step_coroutine("step", 0, coro) is coro
            return same, await coro

    unwrapped, result = asyncio.run(wrapped(plain))
    before = [reports._backend.tracing, reports._backend.measuring]
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())
    later = reports.accepted(row("later"))
    print(json.dumps({
        "before": before,
        "tracing": reports._backend.tracing,
        "plain_span": plain.span is None,
        "plain_context": "trace_context" in row_plain.start_event,
        "in_trace_context": row_in_trace.start_event.get("trace_context"),
        "unwrapped": unwrapped,
        "result": result,
        "later_recording": later.span is not None and later.span.is_recording(),
    }))
    """
)


def test_without_an_sdk_no_span_is_made_and_a_callers_context_is_kept() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=100, check=False
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["plain_span"] is True
    assert report["plain_context"] is False
    traceparent = f"00-{0x1234:032x}-{0x5678:016x}-01"
    assert report["in_trace_context"] == {"traceparent": traceparent}
    assert report["unwrapped"] is True
    assert report["result"] == "done"
    assert report["before"] == [False, False]
    assert report["tracing"] is True  # configured by then
    assert report["later_recording"] is True
