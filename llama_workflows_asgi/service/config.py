"""Tunables of the run service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from .._json import DEFAULT_MAX_JSON_DEPTH
from ..store.base import DEFAULT_PRUNE_BATCH, FINISHED_STATUSES, FinishedStatus

# The engine's serializer refuses values nested past about 250 levels; a start
# event's value sits a few levels down inside a checkpoint.
_CHECKPOINTABLE_DEPTH = 200

DEFAULT_HEARTBEAT_INTERVAL = 25.0
"""Seconds of silence before a stream yields a heartbeat (SSE: ``: heartbeat``), by default."""

DEFAULT_PRUNE_PAUSE = 0.05
"""Seconds between two batches of deletes, by retention and ``runs prune``."""


@dataclass(frozen=True)
class ServiceConfig:
    """How the run service checkpoints, shares runs with other processes and streams.

    Attributes:
        lease_ttl: Seconds a process's heartbeat (its row in the owners table,
            renewed every ownership round) lasts without renewal.
            A process that is gone but whose death cannot be proven (its
            database session still open on a server that has not noticed, a
            store without liveness tokens) has its runs adopted after about this
            long; a provably dead one at the next ownership round.
        poll_interval: Seconds between ownership rounds: heartbeat, adopting
            runs nobody owns, picking up events and cancels sent to other processes.
        stream_poll_interval: Seconds between the reads of the process's shared
            stream tail, which feeds every stream of a run not executing here
            (elsewhere, or released) with one statement for all; on PostgreSQL a
            notification of new events makes it read at once.
        idle_timeout: Seconds a run waiting for input stays in memory before it
            is checkpointed and released; an incoming event brings it back.
            ``None`` keeps idle runs in memory.
        max_resume_attempts: Resumes from crashed owners allowed without progress
            before the run is marked failed.
        claim_batch_size: Runs claimed per statement when adopting.
        checkpoint_delay: Extra seconds the writer waits to gather more work into
            each group commit (0: write as soon as the previous write ends).
        stop_timeout: Seconds a graceful stop (SIGINT, SIGTERM, lifespan end)
            has to stop every local run and write its checkpoint and release;
            the process exits about a second after that at most.
        adopt_local_dead_owners: Adopt at once the runs of owners proven dead:
            their liveness token (a PostgreSQL session advisory lock, an
            ``flock`` beside the SQLite file) is free. Safe whatever the host
            names and process ids (containers may all be pid 1 on one host
            name). Off: only a lapsed heartbeat frees another process's runs.
        accept_context_api: Accept a serialized context in run requests (off by
            default: it lets callers inject arbitrary run state).
        max_page_size: Largest page of handlers one listing returns.
        retention: How long finished runs (completed, failed, cancelled) are
            kept, counted from when they finished; older ones are deleted with
            their events. ``None`` keeps them all.
        retention_by_status: Per-status overrides of ``retention``, e.g.
            ``{"failed": timedelta(days=30)}``; a ``None`` value keeps that
            status forever.
        retention_interval: Seconds between retention rounds. One replica at a
            time prunes; the others skip the round.
        retention_batch_size: Runs deleted per transaction.
        retention_pause: Seconds between two batches of a round, so that the
            runs' own writes go first.
        max_json_depth: Deepest nesting of arrays and objects accepted in JSON
            input (request bodies, events given as JSON strings); deeper is a
            400. Keep it well below 250, the most the engine can checkpoint.
        max_unwritten_age: Seconds progress may wait unwritten (the database
            is away or locked) before ``/health`` reports the writer stalled.
        max_live_runs: Most runs this process holds at once (``None``: no
            bound). A run counts from its start or claim until its outcome or
            release is written, waiting for input included, until
            ``idle_timeout`` releases it; a released run never counts. A run
            started while the process is full is written unowned (the caller
            sees it ``running`` as usual) and claimed, oldest first, by the
            first replica with room, this one included as soon as a run ends.
        max_queued_runs: Most runs that may wait unowned for a replica with room
            (``None``: no bound). Beyond it, a start on a full process is
            refused with ``StoreUnavailableError`` (503 with ``Retry-After``)
            and nothing is written. Counted across the database, so several
            replicas starting at once may overshoot it by a few.
        queue_retry_after: The ``Retry-After`` seconds of that refusal.
    """

    lease_ttl: float = 8.0
    poll_interval: float = 1.0
    stream_poll_interval: float = 0.5
    idle_timeout: float | None = 60.0
    max_resume_attempts: int = 3
    claim_batch_size: int = 500
    checkpoint_delay: float = 0.0
    stop_timeout: float = 5.0
    adopt_local_dead_owners: bool = True
    accept_context_api: bool = False
    max_page_size: int = 1000
    retention: timedelta | None = None
    retention_by_status: Mapping[FinishedStatus, timedelta | None] = field(default_factory=dict)
    retention_interval: float = 300.0
    retention_batch_size: int = DEFAULT_PRUNE_BATCH
    retention_pause: float = DEFAULT_PRUNE_PAUSE
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_unwritten_age: float = 5.0
    max_live_runs: int | None = None
    max_queued_runs: int | None = None
    queue_retry_after: int = 2

    def __post_init__(self) -> None:
        # A zero or negative poll would make the ownership loop (or a stream of a
        # remote run) spin without sleeping, hammering the database.
        for name in ("lease_ttl", "poll_interval", "stream_poll_interval", "max_unwritten_age"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("idle_timeout", "checkpoint_delay", "stop_timeout"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.lease_ttl <= self.poll_interval * 2:
            raise ValueError("lease_ttl must exceed twice poll_interval so heartbeats renew")
        if self.max_resume_attempts < 1 or self.claim_batch_size < 1 or self.max_page_size < 1:
            raise ValueError("max_resume_attempts, claim_batch_size and max_page_size must be >= 1")
        if not 1 <= self.max_json_depth <= _CHECKPOINTABLE_DEPTH:
            # Deeper input would be accepted and then fail to checkpoint.
            raise ValueError(f"max_json_depth must be between 1 and {_CHECKPOINTABLE_DEPTH}")
        self._check_retention()
        self._check_capacity()

    def _check_capacity(self) -> None:
        if self.max_live_runs is not None and self.max_live_runs < 1:
            raise ValueError("max_live_runs must be >= 1, or None for no bound")
        if self.max_queued_runs is not None and self.max_queued_runs < 0:
            raise ValueError("max_queued_runs must be >= 0, or None for no bound")
        if self.max_queued_runs is not None and self.max_live_runs is None:
            # Without a bound on live runs nothing ever waits, so this would bound nothing.
            raise ValueError("max_queued_runs needs max_live_runs")
        if self.queue_retry_after < 1:
            raise ValueError("queue_retry_after must be >= 1")

    def _check_retention(self) -> None:
        unknown = sorted(set(self.retention_by_status) - set(FINISHED_STATUSES))
        if unknown:
            raise ValueError(
                f"retention_by_status: {unknown[0]!r} is not a finished status "
                "(completed, failed or cancelled)"
            )
        ages = [self.retention, *self.retention_by_status.values()]
        if any(age is not None and age <= timedelta(0) for age in ages):
            raise ValueError("retention periods must be positive")
        if self.retention_interval <= 0 or self.retention_batch_size < 1:
            raise ValueError("retention_interval must be > 0 and retention_batch_size >= 1")
        if self.retention_pause < 0:
            raise ValueError("retention_pause must be >= 0")

    def retention_groups(self) -> list[tuple[timedelta, list[FinishedStatus]]]:
        """Each retention period in force, with the statuses it applies to."""
        groups: dict[timedelta, list[FinishedStatus]] = {}
        for status in FINISHED_STATUSES:
            age = self.retention_by_status.get(status, self.retention)
            if age is not None:
                groups.setdefault(age, []).append(status)
        return sorted(groups.items())
