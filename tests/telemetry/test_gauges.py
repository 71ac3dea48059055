"""``telemetry._gauges``: the gauges read every watched service, on a meter of their own.

Real services on memory stores are the sources (their ``Telemetry`` reads
their live-run set, writer and ownership rounds); the points are collected with
the SDK's in-memory reader of a private meter provider.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from workflows.events import StartEvent

from llama_workflows_asgi import MemoryWorkflowStore, WorkflowService
from llama_workflows_asgi.telemetry._gauges import Gauges
from tests.service.conftest import serving
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)


def collect(reader: InMemoryMetricReader) -> dict[str, dict[str, Any]]:
    """Gauge name → {workflow name (or "") → value}."""
    data = reader.get_metrics_data()
    found: dict[str, dict[str, Any]] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points = found.setdefault(metric.name, {})
                for point in metric.data.data_points:
                    name = str((point.attributes or {}).get("workflow.name", ""))
                    points[name] = point.value  # type: ignore[union-attr]
    return found


def waiting(service: WorkflowService) -> bool:
    return any(run.idle_since is not None for run in service._runs.values())


async def test_the_gauges_add_up_live_runs_and_take_the_largest_queue() -> None:
    reader = InMemoryMetricReader()
    gauges = Gauges(MeterProvider(metric_readers=[reader]).get_meter("gauges-test"))
    async with (
        serving(MemoryWorkflowStore()).running_context() as a,
        serving(MemoryWorkflowStore()).running_context() as b,
    ):
        gauges.watch(a.telemetry)
        gauges.watch(b.telemetry)
        for service in (a, b):
            await service.start_run("hitl")
            await eventually(lambda s=service: waiting(s), "the run waits for its answer")
        await a.start_run("slow", StartEvent(seconds=30))
        a._supervisor.queued, b._supervisor.queued = {"greet": 3}, {"greet": 5}
        points = collect(reader)
        assert points["workflow.run.waiting"] == {"hitl": 2}
        assert points["workflow.run.live"] == {"slow": 1}
        assert points["workflow.run.queued"] == {"greet": 5}  # one database's figure, not a sum
        assert points["workflow.writer.unwritten.age"][""] >= 0.0


async def test_a_dropped_service_is_no_longer_reported() -> None:
    reader = InMemoryMetricReader()
    gauges = Gauges(MeterProvider(metric_readers=[reader]).get_meter("gauges-drop"))
    service = serving(MemoryWorkflowStore())
    async with service.running_context():
        gauges.watch(service.telemetry)
        service._supervisor.queued = {"greet": 1}
        assert collect(reader)["workflow.run.queued"] == {"greet": 1}
    del service
    gc.collect()
    assert collect(reader).get("workflow.run.queued", {}) == {}
