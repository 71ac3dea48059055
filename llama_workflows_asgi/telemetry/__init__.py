"""Run telemetry: LlamaIndex instrumentation tags, OpenTelemetry spans and metrics, run logs.

The service reports a handful of moments (a run accepted, resumed, executing,
ended; a group commit written; a stream opened) and this package turns them
into:

* the LlamaIndex instrumentation tags ``llamaindex.handler_id`` and
  ``llamaindex.run_id``, current while every step of the run executes, so
  tracing tools tie LLM calls to the run;
* OpenTelemetry spans and metrics through the OpenTelemetry *API*, when it is
  installed (the ``otel`` extra); the host configures the SDK. Without the API
  nothing here imports it and every report is a no-op;
* one structured log line per run state change, at INFO.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from llama_index_instrumentation.dispatcher import active_instrument_tags, instrument_tags

from ..store.base import PersistentHandler
from . import _logs

if TYPE_CHECKING:
    from . import _otel

HANDLER_ID_TAG = "llamaindex.handler_id"
"""The instrumentation tag naming the handler a step runs for."""

RUN_ID_TAG = "llamaindex.run_id"
"""The instrumentation tag naming the run a step belongs to."""

TRACE_CONTEXT_KEY = "trace_context"
"""Key of the W3C trace context kept in a handler's ``start_event`` document."""

_current_run: ContextVar[RunTelemetry | None] = ContextVar("workflow_run_telemetry", default=None)


class RunSource(Protocol):
    """What the gauges read from a live run."""

    @property
    def row(self) -> PersistentHandler:
        """The run's handler row."""

    @property
    def idle_since(self) -> Any:
        """When the run began waiting for input (``None`` while it works)."""


class LiveRunSet(Protocol):
    """What the gauges read from the set of runs a service holds in memory."""

    def values(self) -> Sequence[RunSource]:
        """The runs in memory now."""


class Backlog(Protocol):
    """What the gauges read from a service's progress writer."""

    @property
    def unwritten_since(self) -> float | None:
        """Monotonic time of the oldest progress not yet written, ``None`` if all is."""


class RunQueue(Protocol):
    """What the gauges read from a service's ownership rounds."""

    @property
    def queued(self) -> Mapping[str, int]:
        """Runs waiting unowned for a replica with room, by workflow (last round)."""


class _NothingWatched:
    """The sources of a service not watched (yet): no runs, no backlog, no queue."""

    queued: Mapping[str, int] = {}
    unwritten_since: float | None = None

    def values(self) -> Sequence[RunSource]:
        return []


_NOTHING = _NothingWatched()


@functools.cache
def _load_backend() -> _otel.OtelBackend | None:
    # Cached: a failed import is retried (and searched for on disk) on every attempt.
    try:
        from . import _otel
    except ImportError:  # the OpenTelemetry API is not installed
        return None
    return _otel.backend()


class Telemetry:
    """The reports of one run service; spans and metrics only with OpenTelemetry installed."""

    def __init__(self) -> None:
        self._backend = _load_backend()
        self._runs: LiveRunSet = _NOTHING
        self._backlog: Backlog = _NOTHING
        self._queue: RunQueue = _NOTHING

    @property
    def enabled(self) -> bool:
        """Whether spans and metrics are recorded (the OpenTelemetry API is installed)."""
        return self._backend is not None

    def watch(self, runs: LiveRunSet, backlog: Backlog, queue: RunQueue | None = None) -> None:
        """Report ``runs`` (live and waiting), ``backlog``'s age and ``queue``'s queued runs."""
        self._runs, self._backlog = runs, backlog
        self._queue = _NOTHING if queue is None else queue
        if self._backend is not None:
            self._backend.watch(self)

    def live_runs(self) -> Sequence[RunSource]:
        """The runs the watched service holds in memory."""
        return self._runs.values()

    def unwritten_since(self) -> float | None:
        """Monotonic time of the watched writer's oldest unwritten progress."""
        return self._backlog.unwritten_since

    def queued_runs(self) -> Mapping[str, int]:
        """Runs waiting unowned for a replica with room, by workflow (last ownership round)."""
        return self._queue.queued

    def accepted(self, row: PersistentHandler) -> RunTelemetry:
        """A new run was accepted (its row not yet written).

        Its span is a child of the caller's current span (the request's, inside
        a request); the span's trace context is recorded in ``row.start_event``
        so a resume in another process can link to it.
        """
        run = RunTelemetry(row, self._backend, announce=self._announce_start)
        if self._backend is None:
            return run
        if self._backend.tracing:
            run.span = self._backend.start_run(row, link=None)
            carrier = self._backend.carrier(run.span)
        else:
            # Without an SDK a run span would record nothing: only a context
            # propagated to the caller is worth keeping.
            carrier = self._backend.current_carrier()
        if carrier and row.start_event is not None:
            row.start_event = {**row.start_event, TRACE_CONTEXT_KEY: carrier}
        return run

    def queued(self, row: PersistentHandler) -> None:
        """A new run was written unowned, to wait for a replica with room.

        It gets its span where it is claimed (a resume, without a link to the
        request that queued it).
        """
        _logs.state(row, "queued")

    def _announce_start(self, run: RunTelemetry) -> None:
        if self._backend is not None:
            self._backend.run_started(run.workflow_name)
        _logs.state(run, "started")

    def resumed(self, row: PersistentHandler, *, previous_owner: str | None) -> RunTelemetry:
        """A run was claimed here to resume from its checkpoint.

        A ``previous_owner`` means it was taken from an owner that did not
        release it (an adoption after a crash or a lapsed lease).
        """
        adopted = previous_owner is not None
        run = RunTelemetry(row, self._backend)
        if self._backend is not None:
            if self._backend.tracing:
                carrier = (row.start_event or {}).get(TRACE_CONTEXT_KEY)
                run.span = self._backend.start_run(row, link=carrier)
            self._backend.resumed(run.span, row, adopted=adopted, previous_owner=previous_owner)
        _logs.resumed(row, adopted=adopted, previous_owner=previous_owner)
        return run


class RunTelemetry:
    """The reports of one run while it executes in this process."""

    def __init__(
        self,
        row: PersistentHandler,
        backend: _otel.OtelBackend | None = None,
        *,
        announce: Callable[[RunTelemetry], None] | None = None,
    ) -> None:
        assert row.run_id is not None
        self.handler_id = row.handler_id
        self.run_id = row.run_id
        self.workflow_name = row.workflow_name
        self.backend = backend
        self.span: Any = None
        self._began = time.monotonic()
        self._announce = announce
        self._ended = False

    @contextmanager
    def executing(self) -> Iterator[None]:
        """The context to start the run's engine in.

        Every task the engine starts copies it, so each step executes with the
        instrumentation tags set and the run's span current.
        """
        tags = {
            **active_instrument_tags.get(),
            HANDLER_ID_TAG: self.handler_id,
            RUN_ID_TAG: self.run_id,
        }
        if self._announce is not None:
            announce, self._announce = self._announce, None
            announce(self)
        token = _current_run.set(self)
        try:
            with instrument_tags(tags):
                if self.backend is None or self.span is None:
                    yield
                else:
                    with self.backend.current(self.span):
                        yield
        finally:
            _current_run.reset(token)

    def ended(self, status: str, error: str | None = None) -> None:
        """The run stopped executing here: finished (``status`` is its outcome),
        ``"released"`` to other processes, or ``"lost"`` (ownership taken away)."""
        if self._ended:
            return
        self._ended = True
        if self.backend is not None:
            seconds = time.monotonic() - self._began
            self.backend.end_run(self.span, self.workflow_name, status, error, seconds)
        _logs.ended(self, status, error)


def step_coroutine(
    step_name: str, worker_id: int, coro: Coroutine[Any, Any, Any]
) -> Coroutine[Any, Any, Any]:
    """``coro`` (one execution of a step) wrapped in a span and timed, when tracing runs."""
    run = _current_run.get()
    if run is None or run.backend is None or not run.backend.measuring:
        return coro
    return run.backend.step(run, step_name, worker_id, coro)


def batch_written(size: int, seconds: float) -> None:
    """The writer committed ``size`` runs' progress in ``seconds``."""
    backend = _load_backend()
    if backend is not None:
        backend.batch_written(size, seconds)


def failed_batch() -> None:
    """The writer could not commit a batch; it retries."""
    backend = _load_backend()
    if backend is not None:
        backend.failed_batch()


@contextmanager
def stream_open() -> Iterator[None]:
    """Count an event stream as open while the block runs."""
    backend = _load_backend()
    if backend is None:
        yield
        return
    backend.streams(1)
    try:
        yield
    finally:
        backend.streams(-1)


__all__ = [
    "HANDLER_ID_TAG",
    "RUN_ID_TAG",
    "TRACE_CONTEXT_KEY",
    "Backlog",
    "LiveRunSet",
    "RunQueue",
    "RunTelemetry",
    "Telemetry",
    "batch_written",
    "failed_batch",
    "step_coroutine",
    "stream_open",
]
