"""The real OpenTelemetry SDK, installed once per test session as the global providers.

The library only uses the API's global providers, so the tests configure them
as a host would: spans go to an in-memory exporter, metrics to an in-memory
reader and to a Prometheus reader (scraped over HTTP by the Prometheus test).
Tests tell their own spans and points apart by handler id or workflow name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


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
