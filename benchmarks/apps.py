"""ASGI apps of every benchmarked server, chosen by ``BENCH_TARGET``.

``uvicorn --factory benchmarks.apps:create_app`` with:

* ``BENCH_TARGET``: ``memory``, ``sqlite``, ``postgres`` (this package),
  ``reference`` (``llama-agents-server`` 0.8.0 with its SQLite store) or
  ``handwritten`` (a plain FastAPI endpoint awaiting ``workflow.run()``: no
  store, no durability; the anchor every other target is compared with);
* ``BENCH_DATABASE``: the SQLite file or PostgreSQL URL;
* ``BENCH_HEAP=1``: trace Python allocations and serve ``GET /__bench/heap``
  (memory held by live Python objects, which the resident size does not show);
* ``BENCH_OTEL``: configure the OpenTelemetry SDK as a host would, to measure
  the cost of the package's spans and metrics: ``sampled`` keeps one trace in
  ten (``ParentBased(TraceIdRatioBased(0.1))``), ``all`` keeps every trace;
  spans go through a batch processor to an exporter that drops them, metrics
  to an in-memory reader. Unset: the API alone, with no SDK (its no-op).
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from typing import Any

from benchmarks.checkout import check_package
from benchmarks.workloads import workflows


def create_app() -> Any:
    target = os.environ["BENCH_TARGET"]
    if os.environ.get("BENCH_OTEL"):
        _configure_otel(os.environ["BENCH_OTEL"])
    if target == "reference":
        return _reference_app(os.environ["BENCH_DATABASE"])
    if target == "handwritten":
        return _handwritten_app()
    # Checked here only: the hand-written and reference servers must not import
    # this package (it would change their heap).
    check_package()
    from llama_workflows_asgi import (
        MemoryWorkflowStore,
        ServiceConfig,
        SqlAlchemyWorkflowStore,
        WorkflowServer,
    )

    store = (
        MemoryWorkflowStore()
        if target == "memory"
        else SqlAlchemyWorkflowStore(_url(target, os.environ["BENCH_DATABASE"]), migrate=True)
    )
    delay = float(os.environ.get("BENCH_CHECKPOINT_DELAY", "0"))
    server = WorkflowServer(store, config=ServiceConfig(checkpoint_delay=delay))
    for name, workflow in workflows().items():
        server.add_workflow(name, workflow)
    if os.environ.get("BENCH_HEAP") == "1":
        tracemalloc.start()
        server.app.add_api_route("/__bench/heap", _heap)
    # As ``serve()`` and the ``serve`` command serve it (the startup heap
    # frozen); an older checkout under ``--code`` may predate ``served_app``.
    served = getattr(server, "served_app", None)
    return server.app if served is None else served()


async def _heap() -> dict[str, float]:
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    return {"current_mb": current / 2**20, "peak_mb": peak / 2**20}


def _configure_otel(mode: str) -> None:
    from collections.abc import Sequence

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    sampler = ALWAYS_ON if mode == "all" else ParentBased(TraceIdRatioBased(0.1))
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def _url(target: str, database: str) -> str:
    return f"sqlite+aiosqlite:///{database}" if target == "sqlite" else database


def _reference_app(db_path: str) -> Any:
    from llama_agents.server import SqliteWorkflowStore
    from llama_agents.server import WorkflowServer as ReferenceServer

    server = ReferenceServer(workflow_store=SqliteWorkflowStore(db_path=db_path))
    for name, workflow in workflows().items():
        server.add_workflow(name, workflow)
    return server.app


def _handwritten_app() -> Any:
    """What a user writes without this package: one endpoint awaiting the run."""
    from fastapi import FastAPI
    from workflows.events import StartEvent

    app = FastAPI()
    registered = workflows()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.post("/workflows/{name}/run")
    async def run(name: str, body: dict[str, Any]) -> dict[str, Any]:
        fields = body.get("start_event") or {}
        result = await registered[name].run(start_event=StartEvent(**fields))
        return {"status": "completed", "result": {"value": {"result": result}}}

    return app
