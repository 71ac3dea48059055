"""Ownership rounds: renew our heartbeat, honour remote cancels and events, adopt orphaned runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from ..errors import StoreUnavailableError
from ..store.base import AbstractWorkflowStore, utcnow
from .config import ServiceConfig
from .guard import FailureLog, start_guarded
from .inbox import deliver_entry
from .live_runs import LiveRuns
from .ownership import Owner

if TYPE_CHECKING:
    from .recovery import Recovery

logger = logging.getLogger(__name__)


class Supervisor:
    """Runs one ownership round every ``poll_interval`` (the first one at once).

    A round renews this process's heartbeat (one owners row, whatever the
    number of runs) and reads back which runs are still ours; a live run whose
    row is no longer ours (cancelled or finished elsewhere, or adopted after
    our heartbeat lapsed) is stopped here. Events recorded for our runs by
    other processes are delivered. Runs nobody live owns are claimed in
    batches and resumed. If the store stays unreachable for most of
    ``lease_ttl``, every local run is stopped, since another process may adopt
    them once it is back.
    """

    def __init__(
        self,
        store: AbstractWorkflowStore,
        owner: Owner,
        config: ServiceConfig,
        *,
        live: LiveRuns,
        recovery: Recovery,
    ) -> None:
        self._store = store
        self._owner = owner
        self._config = config
        self._live = live
        self._recovery = recovery
        self._task: asyncio.Task[None] | None = None
        self._last_renewal = time.monotonic()
        # Claims and renewals must not interleave: a row claimed but not yet
        # registered as a live run would look like an orphan to a renewal.
        self._lock = asyncio.Lock()
        self.first_round = asyncio.Event()
        self._last_round = time.monotonic()
        self.last_error: BaseException | None = None
        self._failures = FailureLog(logger, "ownership round")

    async def register(self) -> None:
        """Write this owner's heartbeat row, before any row names this process its owner."""
        now = utcnow()
        expires_at = now + timedelta(seconds=self._config.lease_ttl)
        await self._store.heartbeat(self._owner.id, now=now, expires_at=expires_at)
        self._last_renewal = time.monotonic()

    def start(self) -> None:
        """Start the rounds."""
        if self._task is None:
            self._last_renewal = self._last_round = time.monotonic()
            self._task = start_guarded("workflow-supervisor", self._loop, logger)

    def silent_for(self) -> float:
        """Seconds since the last ownership round completed (or the rounds started)."""
        return time.monotonic() - self._last_round

    async def stop(self) -> None:
        """Stop the rounds."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.round()
            except Exception as exc:
                self.last_error = exc
                self._on_store_trouble(exc)
            else:
                self.last_error = None
                self._last_round = time.monotonic()
                self._failures.cleared()
            self.first_round.set()
            await asyncio.sleep(self._config.poll_interval)

    async def round(self) -> None:
        """One ownership round."""
        async with self._lock:
            await self._renew()
            await self._deliver_remote_events()
            await self._adopt(None)

    async def _renew(self) -> None:
        # Runs started after this snapshot may not be written yet: only those
        # already running can be judged lost.
        running = [
            r for r in self._live.values() if r.handler is not None and not r.finished.is_set()
        ]
        now = utcnow()
        expires_at = now + timedelta(seconds=self._config.lease_ttl)
        owned = await self._store.heartbeat(self._owner.id, now=now, expires_at=expires_at)
        self._last_renewal = time.monotonic()
        for run in running:
            if run.handler_id not in owned and not run.finished.is_set():
                logger.info("run %s is no longer owned here; stopping it", run.run_id)
                self._live.lose(run)
        # Rows still ours that nothing here runs (stopped while the store was
        # away) go back to the pool, to be claimed and resumed properly.
        orphans = owned - {run.handler_id for run in self._live.values()}
        if orphans:
            await self._store.release_handlers(self._owner.id, sorted(orphans))

    async def _deliver_remote_events(self) -> None:
        runs = {run.handler_id: run for run in self._live.values() if run.handler is not None}
        if not runs:
            return
        for entry in await self._store.read_inbox(list(runs)):
            run = runs.get(entry.handler_id)
            if run is not None and entry.run_id == run.run_id and entry.id not in run.delivered:
                deliver_entry(run, entry)

    async def adopt(self, handler_ids: Sequence[str] | None = None) -> int:
        """Claim and resume runs nobody live owns; return how many were claimed."""
        async with self._lock:
            return await self._adopt(handler_ids)

    async def _adopt(self, handler_ids: Sequence[str] | None) -> int:
        liveness = self._store.liveness
        if not liveness.held:
            return 0  # others may take us for dead: own nothing until the token is back
        dead: set[str] = set()
        if self._config.adopt_local_dead_owners:
            others = await self._store.list_owners() - {self._owner.id}
            dead = await liveness.probe(others) if others else set()
        claimed = 0
        while True:
            now = utcnow()
            rows = await self._store.claim_handlers(
                self._owner.id,
                now=now,
                lease_until=now + timedelta(seconds=self._config.lease_ttl),
                dead_owners=sorted(dead),
                handler_ids=handler_ids,
                limit=self._config.claim_batch_size,
            )
            await self._recovery.resume_batch(rows)
            claimed += len(rows)
            if len(rows) < self._config.claim_batch_size:
                return claimed

    def _on_store_trouble(self, exc: Exception) -> None:
        if isinstance(exc, StoreUnavailableError):
            logger.warning("ownership round failed: %s", exc)
        else:
            self._failures.failed(exc)  # a bug: its traceback, once
        silent_for = time.monotonic() - self._last_renewal
        if silent_for > self._config.lease_ttl * 0.75:
            for run in self._live.values():
                if not run.finished.is_set():
                    logger.warning("heartbeat may lapse; stopping run %s here", run.run_id)
                    self._live.lose(run)
