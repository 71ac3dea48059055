"""The gauges: what the watched run services hold now, read when the metric reader collects.

Every run service of the process is watched (weakly: a stopped and dropped
service stops being reported) through the small protocols of ``telemetry``; the
gauges sum or compare what each one answers.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

if TYPE_CHECKING:
    from . import RunSource


class GaugeSource(Protocol):
    """What one run service reports to the gauges."""

    def live_runs(self) -> Sequence[RunSource]:
        """The runs in memory."""

    def unwritten_since(self) -> float | None:
        """Monotonic time of the oldest progress not yet written."""

    def queued_runs(self) -> Mapping[str, int]:
        """Runs waiting unowned in the database for a replica with room, by workflow."""


class Gauges:
    """The live, waiting, queued and unwritten-age gauges of one meter."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._watched: weakref.WeakSet[GaugeSource] = weakref.WeakSet()
        meter.create_observable_gauge(
            "workflow.run.live", [self._observe_live], "{run}", "Runs executing in this process"
        )
        meter.create_observable_gauge(
            "workflow.run.waiting",
            [self._observe_waiting],
            "{run}",
            "Runs in this process waiting for an event",
        )
        meter.create_observable_gauge(
            "workflow.run.queued",
            [self._observe_queued],
            "{run}",
            "Runs waiting unowned in the database for a replica with room "
            "(the same figure from every replica of one database)",
        )
        meter.create_observable_gauge(
            "workflow.writer.unwritten.age",
            [self._observe_unwritten],
            "s",
            "Age of the oldest progress not yet written to the store",
        )

    def watch(self, source: GaugeSource) -> None:
        """Report ``source``'s runs and writer backlog while it lives."""
        self._watched.add(source)

    def _sources(self) -> list[GaugeSource]:
        # Collection may run on the metric reader's thread while the event
        # loop changes the collections: retry the snapshot.
        for _ in range(5):
            try:
                return list(self._watched)
            except RuntimeError:
                continue
        return []

    def _runs(self) -> list[RunSource]:
        runs: list[RunSource] = []
        for source in self._sources():
            for _ in range(5):
                try:
                    runs.extend(source.live_runs())
                    break
                except RuntimeError:
                    continue
        return runs

    def _observe_live(self, _: CallbackOptions) -> Iterable[Observation]:
        return _by_workflow(r for r in self._runs() if r.idle_since is None)

    def _observe_waiting(self, _: CallbackOptions) -> Iterable[Observation]:
        return _by_workflow(r for r in self._runs() if r.idle_since is not None)

    def _observe_queued(self, _: CallbackOptions) -> Iterable[Observation]:
        # Every service of this process shares the database's figure: the largest.
        counts: dict[str, int] = {}
        for source in self._sources():
            for name, count in dict(source.queued_runs()).items():
                counts[name] = max(counts.get(name, 0), count)
        return [Observation(n, {"workflow.name": name}) for name, n in sorted(counts.items())]

    def _observe_unwritten(self, _: CallbackOptions) -> Iterable[Observation]:
        now = time.monotonic()
        oldest = [s.unwritten_since() for s in self._sources()]
        ages = [now - since for since in oldest if since is not None]
        return [Observation(max(ages, default=0.0))]


def _by_workflow(runs: Iterator[RunSource]) -> list[Observation]:
    counts: dict[str, int] = {}
    for run in runs:
        name = run.row.workflow_name
        counts[name] = counts.get(name, 0) + 1
    return [Observation(n, {"workflow.name": name}) for name, n in counts.items()]
