"""Ownership rounds: renew our heartbeat, honour remote cancels and events, adopt orphaned runs.

Claims take only runs of a workflow version this process serves, and with
``max_live_runs`` no more than the room left, oldest first; a run leaving
makes room, and the next waiting run is claimed at once, between rounds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from .._aio import first_set
from ..errors import StoreUnavailableError
from ..registry import WorkflowRegistry
from ..store.base import AbstractWorkflowStore, HandlerQuery, utcnow
from ..store.notifications import Notice
from .config import ServiceConfig
from .guard import FailureLog, start_guarded
from .inbox import deliver_entry
from .live import LiveRun
from .live_runs import LiveRuns
from .ownership import Owner

if TYPE_CHECKING:
    from .recovery import Recovery

logger = logging.getLogger(__name__)

LATE_SHARE = 0.75
"""Share of ``lease_ttl`` after which an unrenewed heartbeat is late: stop, own nothing new."""


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

    Between rounds, wakeups are acted on at once: an event sent to a run live
    here is read and delivered, a run cancelled or taken elsewhere is stopped,
    freed runs are claimed (as are waiting runs when room frees up here), and
    after a reconnect (when wakeups may have been missed) a whole round runs.
    """

    def __init__(
        self,
        store: AbstractWorkflowStore,
        owner: Owner,
        config: ServiceConfig,
        *,
        live: LiveRuns,
        recovery: Recovery,
        registry: WorkflowRegistry,
        count_queued: bool = False,
    ) -> None:
        self._store = store
        self._registry = registry
        self._count_queued = count_queued
        self.queued: dict[str, int] = {}
        """Runs waiting unowned for room, by workflow, as of the last round (if counted)."""
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
        self._wake = asyncio.Event()
        self._woken: set[str] = set()  # handlers live here that a wakeup named
        self._claim = self._missed = False
        self._unsubscribe: Callable[[], None] = lambda: None

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
            self._unsubscribe = self._store.notifications.subscribe(self.notice)
            self._task = start_guarded("workflow-supervisor", self._loop, logger)

    def heartbeat_late(self) -> bool:
        """Whether our heartbeat went unrenewed for most of ``lease_ttl``.

        Others may soon take this process for gone and adopt what it owns, so
        it must not take on new runs until a round renews the heartbeat.
        """
        return time.monotonic() - self._last_renewal > self._config.lease_ttl * LATE_SHARE

    def silent_for(self) -> float:
        """Seconds since the last ownership round completed (or the rounds started)."""
        return time.monotonic() - self._last_round

    async def stop(self) -> None:
        """Stop the rounds."""
        self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        # A claim a request began (a retry, an event for a released run) ends
        # first: the runs it resumed are then live here, and a shutdown stops them.
        async with self._lock:
            pass

    async def _loop(self) -> None:
        while True:
            self._missed = False
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
            await self._between_rounds(time.monotonic() + self._config.poll_interval)

    async def _between_rounds(self, deadline: float) -> None:
        """Act on wakeups until ``deadline`` (or a wakeup that asks for a whole round).

        A wakeup is the store's (see :meth:`notice`) or, with ``max_live_runs``,
        room freed here: waiting runs are claimed at once, not at the next round.
        """
        room_freed = self._live.room_freed
        wakeups = [self._wake]
        if self._config.max_live_runs is not None:
            wakeups.append(room_freed)
        while (left := deadline - time.monotonic()) > 0 and not self._missed:
            await first_set(wakeups, left)
            self._wake.clear()
            woken, self._woken = self._woken, set()
            claim = self._claim or (room_freed.is_set() and len(wakeups) > 1)
            self._claim = False
            room_freed.clear()
            try:
                if woken and not self._missed:
                    await self._check_runs(woken)
                if claim and not self._missed:
                    await self.adopt()
            except Exception as exc:  # the next round tries again
                logger.info("acting on a wakeup failed: %s", exc)

    def notice(self, notice: Notice, keys: Collection[str]) -> None:
        """A store wakeup: act on it now if it concerns this process."""
        if notice == "wake":
            woken = {key for key in keys if self._live.get(key) is not None}
            if not woken:
                return
            self._woken |= woken
        elif notice == "free":
            self._claim = True
        elif notice == "all":
            self._missed = True
        else:
            return
        self._wake.set()

    async def _check_runs(self, handler_ids: Collection[str]) -> None:
        """Stop those of these live runs whose row is no longer ours; deliver their events."""
        async with self._lock:
            runs = {hid: run for hid in handler_ids if (run := self._live.get(hid)) is not None}
            runs = {hid: run for hid, run in runs.items() if run.handler is not None}
            if not runs:
                return
            query = HandlerQuery(handler_id_in=list(runs), load_ctx=False)
            rows = {row.handler_id: row for row in await self._store.query(query)}
            for handler_id, run in list(runs.items()):
                row = rows.get(handler_id)
                ours = row is not None and row.status == "running" and row.run_id == run.run_id
                if not (ours and row is not None and row.owner_id == self._owner.id):
                    if not run.finished.is_set():
                        logger.info("run %s is no longer owned here; stopping it", run.run_id)
                        self._live.lose(run)
                    del runs[handler_id]
            await self._deliver_remote_events(runs)

    async def round(self) -> None:
        """One ownership round."""
        async with self._lock:
            await self._renew()
            await self._deliver_remote_events(None)
            await self._adopt(None)
        if self._count_queued:
            self.queued = await self._store.count_queued()

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

    async def _deliver_remote_events(self, runs: dict[str, LiveRun] | None) -> None:
        if runs is None:
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
            room, batch = self._live.room(), self._config.claim_batch_size
            limit = batch if room is None else min(room, batch)
            if limit == 0:
                return claimed  # full: whoever has room claims them
            with self._live.reserving(limit):
                now = utcnow()
                rows = await self._store.claim_handlers(
                    self._owner.id,
                    now=now,
                    lease_until=now + timedelta(seconds=self._config.lease_ttl),
                    dead_owners=sorted(dead),
                    handler_ids=handler_ids,
                    limit=limit,
                    versions=self._registry.versions(),
                )
                await self._recovery.resume_batch(rows)
            claimed += len(rows)
            if len(rows) < limit:
                return claimed

    def _on_store_trouble(self, exc: Exception) -> None:
        if isinstance(exc, StoreUnavailableError):
            logger.warning("ownership round failed: %s", exc)
        else:
            self._failures.failed(exc)  # a bug: its traceback, once
        if self.heartbeat_late():
            for run in self._live.values():
                if not run.finished.is_set():
                    logger.warning("heartbeat may lapse; stopping run %s here", run.run_id)
                    self._live.lose(run)
