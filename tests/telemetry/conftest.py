"""The real OpenTelemetry SDK, installed once per test session as the global providers.

The library only uses the API's global providers, so the tests configure them
as a host would: spans go to an in-memory exporter, metrics to an in-memory
reader and to a Prometheus reader (scraped over HTTP by the Prometheus test).
Tests tell their own spans and points apart by handler id or workflow name.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from llama_index_instrumentation.dispatcher import active_instrument_tags
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import make_asgi_app
from workflows import Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi import ServiceConfig, SqlAlchemyWorkflowStore, workflow_router
from llama_workflows_asgi.telemetry import HANDLER_ID_TAG, RUN_ID_TAG
from tests.support.servers import serving
from tests.support.workflows import AnswerEvent, AskEvent


@dataclass
class Sdk:
    """The session's SDK: its tracer provider, span exporter and metric reader."""

    tracer_provider: TracerProvider
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader


_SDK: Sdk | None = None


def _install() -> Sdk:
    global _SDK
    if _SDK is None:
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader, PrometheusMetricReader()]))
        _SDK = Sdk(tracer_provider, exporter, reader)
    return _SDK


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    """The global SDK, with no finished spans left from earlier tests."""
    installed = _install()
    installed.spans.clear()
    yield installed
    installed.spans.clear()


def points(sdk: Sdk, name: str, **attributes: Any) -> list[Any]:
    """The data points of metric ``name`` whose attributes include ``attributes``."""
    wanted = {k.replace("__", "."): v for k, v in attributes.items()}
    data = sdk.metrics.get_metrics_data()
    found: list[Any] = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            if scope.scope.name != "llama_workflows_asgi":
                continue
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    attrs = dict(point.attributes or {})
                    if all(attrs.get(k) == v for k, v in wanted.items()):
                        found.append(point)
    return found


def total(found: Sequence[Any]) -> float:
    return sum(p.count if isinstance(p, HistogramDataPoint) else p.value for p in found)


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
    # No test here adopts a run: a long lease keeps a heartbeat that a loaded machine
    # delays from making the service refuse new runs (503).
    config = ServiceConfig(idle_timeout=0.2, poll_interval=0.1, lease_ttl=60.0)
    store = SqlAlchemyWorkflowStore(f"sqlite+aiosqlite:///{tmp_path / 'otel.db'}")
    app = FastAPI()
    app.include_router(workflow_router(store, workflows=workflows, config=config))
    app.mount("/metrics", make_asgi_app())  # the Prometheus recipe of docs/observability.md
    FastAPIInstrumentor.instrument_app(app, tracer_provider=sdk.tracer_provider)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield Host(http, names)
