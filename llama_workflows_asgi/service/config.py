"""Tunables of the run service."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceConfig:
    """How the run service checkpoints, shares runs with other processes and streams.

    Attributes:
        lease_ttl: Seconds a process's ownership of a run lasts without renewal.
            A process that is gone but whose death cannot be proven (its
            database session still open on a server that has not noticed, a
            store without liveness tokens) has its runs adopted after about this
            long; a provably dead one at the next ownership round.
        poll_interval: Seconds between ownership rounds: lease renewal, adopting
            runs nobody owns, picking up events and cancels sent to other processes.
        stream_poll_interval: Seconds between event-log reads while streaming a
            run executing in another process.
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
            name). Off: only expired leases free another process's runs.
        accept_context_api: Accept a serialized context in run requests (off by
            default: it lets callers inject arbitrary run state).
        max_page_size: Largest page of handlers one listing returns.
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

    def __post_init__(self) -> None:
        # A zero or negative poll would make the ownership loop (or a stream of a
        # remote run) spin without sleeping, hammering the database.
        for name in ("lease_ttl", "poll_interval", "stream_poll_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("idle_timeout", "checkpoint_delay", "stop_timeout"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.lease_ttl <= self.poll_interval * 2:
            raise ValueError("lease_ttl must exceed twice poll_interval so leases renew in time")
        if self.max_resume_attempts < 1 or self.claim_batch_size < 1 or self.max_page_size < 1:
            raise ValueError("max_resume_attempts, claim_batch_size and max_page_size must be >= 1")
