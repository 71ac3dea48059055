"""Spans and metrics through the OpenTelemetry API (imported only when it is installed).

The library uses the API's global tracer and meter providers: the host
configures the SDK (exporters, sampling, views); until it does, every call
here is the API's no-op. Instruments are created once per process and shared
by every run service in it; the gauges that read the services are ``_gauges.py``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from importlib import metadata
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as _metrics_api
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .._engine import StepWorkerFailed, TickStepResult
from ..store.base import PersistentHandler
from ._gauges import Gauges, GaugeSource

if TYPE_CHECKING:
    from . import RunTelemetry

_SCOPE = "llama_workflows_asgi"
# The stored trace context is the library's own record, always W3C whatever
# propagators the host configured for its requests.
_W3C = TraceContextTextMapPropagator()
_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800]
_COMMIT_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
_BATCH_SIZES = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000]
_MAX_ERROR = 1024


def _version() -> str:
    try:
        return metadata.version("llama_workflows_asgi")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "0"


def _run_attributes(row: PersistentHandler) -> dict[str, str]:
    return {
        "workflow.name": row.workflow_name,
        "workflow.handler_id": row.handler_id,
        "workflow.run_id": row.run_id or "",
    }


class _GlobalProvider:
    """Whether the host has set one of the API's global providers, asked cheaply and often.

    While none is set, the API's getter looks an environment variable up on
    every call (a ``KeyError`` raised and caught each time), and it is asked per
    run and per step. The API keeps the provider in a module global, read here
    instead; the variable only matters to the first call, which the backend's
    own ``get_tracer`` / ``get_meter`` make. A provider can be set only once,
    so once one is seen the answer stays yes; until then a provider the host
    sets later is seen at the next question.
    """

    __slots__ = ("_attribute", "_get", "_module", "_proxy", "_set")

    def __init__(self, module: Any, attribute: str, get: Callable[[], object], proxy: type) -> None:
        self._module, self._attribute, self._get, self._proxy = module, attribute, get, proxy
        self._set = False

    def __call__(self) -> bool:
        if self._set:
            return True
        provider = getattr(self._module, self._attribute, _UNKNOWN)
        if provider is _UNKNOWN:  # an API that keeps it elsewhere: ask it
            provider = self._get()
        self._set = provider is not None and not isinstance(provider, self._proxy)
        return self._set


_UNKNOWN = object()

tracing = _GlobalProvider(
    trace, "_TRACER_PROVIDER", trace.get_tracer_provider, trace.ProxyTracerProvider
)
"""Whether the host configured a tracer provider (an SDK): spans are worth starting.

Until it does, the API's global provider is a proxy whose spans record nothing.
"""

metering = _GlobalProvider(
    _metrics_api, "_METER_PROVIDER", metrics.get_meter_provider, _metrics_api._ProxyMeterProvider
)
"""Whether the host configured a meter provider: measurements are worth taking."""


class OtelBackend:
    """The process's tracer and instruments."""

    def __init__(self) -> None:
        version = _version()
        self.tracer = trace.get_tracer(_SCOPE, version)
        meter = metrics.get_meter(_SCOPE, version)
        self._create_instruments(meter)
        self.gauges = Gauges(meter)

    def _create_instruments(self, meter: metrics.Meter) -> None:
        self.started = meter.create_counter(
            "workflow.run.started", "{run}", "Runs accepted, by workflow"
        )
        self.finished = meter.create_counter(
            "workflow.run.finished", "{run}", "Runs that stopped executing here, by status"
        )
        self.run_duration = meter.create_histogram(
            "workflow.run.duration",
            "s",
            "Time a run executed in this process, from acceptance or resume to its outcome",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.step_duration = meter.create_histogram(
            "workflow.step.duration",
            "s",
            "Time of one step execution",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.resumes = meter.create_counter(
            "workflow.run.resumes", "{run}", "Runs resumed from their checkpoint"
        )
        self.adoptions = meter.create_counter(
            "workflow.lease.adoptions",
            "{run}",
            "Runs taken from an owner that did not release them",
        )
        self.batch_size = meter.create_histogram(
            "workflow.writer.batch.size",
            "{run}",
            "Runs written by one group commit",
            explicit_bucket_boundaries_advisory=_BATCH_SIZES,
        )
        self.commit_duration = meter.create_histogram(
            "workflow.writer.commit.duration",
            "s",
            "Latency of one group commit",
            explicit_bucket_boundaries_advisory=_COMMIT_SECONDS,
        )
        self.commit_failures = meter.create_counter(
            "workflow.writer.commit.failures", "{commit}", "Group commits that failed and retry"
        )
        self.open_streams = meter.create_up_down_counter(
            "workflow.stream.open", "{stream}", "Event streams being read"
        )

    @property
    def tracing(self) -> bool:
        """Whether spans are recorded (see :func:`tracing`)."""
        return tracing()

    @property
    def measuring(self) -> bool:
        """Whether spans or measurements are recorded: a step is worth wrapping."""
        return tracing() or metering()

    def watch(self, source: GaugeSource) -> None:
        """Report ``source``'s runs and writer backlog in the gauges while it lives."""
        self.gauges.watch(source)

    # -- runs ---------------------------------------------------------------------------

    def start_run(self, row: PersistentHandler, link: dict[str, str] | None) -> Span:
        """The span of a run executing here: a child of the current span."""
        links = []
        if link:
            origin = trace.get_current_span(_W3C.extract(link)).get_span_context()
            if origin.is_valid:
                links.append(Link(origin, {"workflow.link": "resumed_from"}))
        return self.tracer.start_span(
            f"workflow {row.workflow_name}",
            kind=SpanKind.INTERNAL,
            attributes=_run_attributes(row),
            links=links,
        )

    def carrier(self, span: Span) -> dict[str, str]:
        """``span``'s W3C trace context (``traceparent``, ``tracestate``)."""
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, trace.set_span_in_context(span))
        return carrier

    def current_carrier(self) -> dict[str, str]:
        """The current span's W3C trace context, if it has a valid one (else empty)."""
        span = trace.get_current_span()
        return self.carrier(span) if span.get_span_context().is_valid else {}

    def current(self, span: Span) -> AbstractContextManager[Span]:
        """Make ``span`` current (without ending it)."""
        return trace.use_span(span, end_on_exit=False)

    def run_started(self, workflow_name: str) -> None:
        """Count an accepted run."""
        self.started.add(1, {"workflow.name": workflow_name})

    def resumed(
        self,
        span: Span | None,
        row: PersistentHandler,
        *,
        adopted: bool,
        previous_owner: str | None,
    ) -> None:
        """Count a resume (an adoption when taken from a live-less owner), marked on ``span``."""
        attributes: dict[str, str | int | bool] = {
            "workflow.resume.attempt": row.resume_attempts,
            "workflow.resume.adopted": adopted,
        }
        if previous_owner is not None:
            attributes["workflow.previous_owner"] = previous_owner
        if span is not None:
            span.add_event("workflow.adopted" if adopted else "workflow.resumed", attributes)
        labels: dict[str, str | bool] = {
            "workflow.name": row.workflow_name,
            "workflow.resume.adopted": adopted,
        }
        self.resumes.add(1, labels)
        if adopted:
            self.adoptions.add(1, {"workflow.name": row.workflow_name})

    def end_run(
        self, span: Span | None, workflow_name: str, status: str, error: str | None, seconds: float
    ) -> None:
        """End the run's span (``None``: it has none) and record its outcome."""
        if span is not None:
            _end_span(span, status, error)
        labels = {"workflow.name": workflow_name, "workflow.status": status}
        self.finished.add(1, labels)
        self.run_duration.record(seconds, labels)

    # -- steps --------------------------------------------------------------------------

    def step(
        self, run: RunTelemetry, step_name: str, worker_id: int, coro: Coroutine[Any, Any, Any]
    ) -> Coroutine[Any, Any, Any]:
        """``coro`` executed inside a span of its own, a child of the run's span."""
        attributes: dict[str, str | int] = {
            "workflow.name": run.workflow_name,
            "workflow.handler_id": run.handler_id,
            "workflow.run_id": run.run_id,
            "workflow.step.name": step_name,
            "workflow.step.worker": worker_id,
        }
        return self._traced_step(attributes, coro)

    async def _traced_step(
        self, attributes: dict[str, str | int], coro: Coroutine[Any, Any, Any]
    ) -> Any:
        began = time.monotonic()
        labels: dict[str, Any] = {
            "workflow.name": attributes["workflow.name"],
            "workflow.step.name": attributes["workflow.step.name"],
        }
        name = f"step {attributes['workflow.step.name']}"
        with self.tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                result = await coro
            except asyncio.CancelledError:
                span.set_attribute("workflow.step.cancelled", True)
                raise
            except BaseException as exc:
                _fail(span, labels, exc)
                raise
            else:
                failure = _failure_of(result)
                if failure is not None:
                    _fail(span, labels, failure)
                return result
            finally:
                self.step_duration.record(time.monotonic() - began, labels)

    # -- writer and streams ---------------------------------------------------------------

    def batch_written(self, size: int, seconds: float) -> None:
        """Record one group commit."""
        self.batch_size.record(size)
        self.commit_duration.record(seconds)

    def failed_batch(self) -> None:
        """Count a group commit that failed."""
        self.commit_failures.add(1)

    def streams(self, delta: int) -> None:
        """An event stream opened (+1) or closed (-1)."""
        self.open_streams.add(delta)


def _end_span(span: Span, status: str, error: str | None) -> None:
    span.set_attribute("workflow.status", status)
    if status == "failed":
        span.set_attribute("error.type", "workflow_failed")
        if error:
            span.set_attribute("workflow.error", error[:_MAX_ERROR])
        span.set_status(Status(StatusCode.ERROR, (error or "failed")[:_MAX_ERROR]))
    span.end()


def _failure_of(result: Any) -> BaseException | None:
    """The exception of a step execution the engine caught (and may retry)."""
    if not isinstance(result, TickStepResult):
        return None
    for item in result.result:
        if isinstance(item, StepWorkerFailed):
            exc: BaseException = item.exception
            return exc
    return None


def _fail(span: Span, labels: dict[str, Any], exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:_MAX_ERROR]))
    labels["error.type"] = type(exc).__qualname__


@functools.cache
def backend() -> OtelBackend:
    """The process's backend (created on first use)."""
    return OtelBackend()
