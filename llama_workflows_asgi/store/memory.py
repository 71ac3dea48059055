"""An in-process store: for tests, development and runs that need not survive a restart.

Its rows and their eviction are ``_memory_rows``, its ownership (heartbeats,
claims) ``_memory_owners``; this module is the interface: handlers, progress
and finals through ``state``, the event logs and the inboxes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from . import state
from ._memory_owners import MemoryOwnership
from ._memory_rows import matching, order_key
from ._rows import dump_json
from .base import (
    DEFAULT_PRUNE_BATCH,
    FINISHED_STATUSES,
    FinishedStatus,
    HandlerExistsError,
    HandlerQuery,
    InboxEntry,
    PersistentHandler,
    RunProgress,
    Status,
    StoredEvent,
    finished_statuses,
    prune_cutoff,
)
from .liveness import Liveness


class MemoryWorkflowStore(MemoryOwnership):
    """Keeps everything in dictionaries; nothing survives the process.

    Once more than ``max_completed`` handlers have finished, the oldest finished
    ones are dropped with their events (``None`` keeps them all; a negative
    number raises ``ValueError``).
    """

    durable = False

    @property
    def liveness(self) -> Liveness:
        """In-process tokens: an owner of this store is alive while its service runs."""
        return self._liveness

    async def close(self) -> None:
        """Stop the writer of the run service's progress (the data stays)."""
        await self.close_progress_writer()

    # -- seed interface ------------------------------------------------------------

    async def query(self, query: HandlerQuery) -> list[PersistentHandler]:
        rows = sorted(matching(self._handlers.values(), query), key=order_key)
        if query.descending:
            rows.reverse()
        if query.after is not None:
            mark = (query.after.started_at, query.after.handler_id)
            rows = [
                h
                for h in rows
                if (order_key(h) < mark if query.descending else order_key(h) > mark)
            ]
        if query.limit is not None:
            rows = rows[: query.limit]
        if not query.load_ctx:
            return [self._read(h, ctx=False).model_copy(update={"ctx": None}) for h in rows]
        return [self._read(h).model_copy() for h in rows]

    async def update(self, handler: PersistentHandler) -> None:
        self._check_key_free(handler)
        existing = self._handlers.get(handler.handler_id)
        if existing is not None and existing.run_id not in (None, handler.run_id):
            self._drop_replaced_run(existing.run_id, handler)
        self._replace(handler.model_copy())
        self._evict_completed()

    async def delete(self, query: HandlerQuery) -> int:
        doomed = list(matching(self._handlers.values(), query))
        for handler in doomed:
            self._drop(handler)
        return len(doomed)

    # -- starting runs -----------------------------------------------------------

    async def create_handler(
        self, handler: PersistentHandler, *, replaces_run_id: str | None = None
    ) -> None:
        existing = self._handlers.get(handler.handler_id)
        if replaces_run_id is None:
            if existing is not None:
                raise HandlerExistsError(handler.handler_id)
        elif not state.replaceable(replaces_run_id).admits(existing):
            raise HandlerExistsError(handler.handler_id)
        self._check_key_free(handler)
        if existing is not None:
            self._drop(existing)
        self._replace(handler.model_copy())
        owner, until = handler.owner_id, handler.lease_expires_at
        if owner is not None and until is not None:  # its writer is alive: see _writes
            beat = self._owners.get(owner)
            if beat is not None and beat.expires_at < until:
                self._owners[owner] = dataclasses.replace(beat, expires_at=until)

    async def get_by_idempotency_key(self, key: str) -> PersistentHandler | None:
        found = (h for h in self._handlers.values() if h.idempotency_key == key)
        match = next(found, None)
        return None if match is None else self._read(match).model_copy()

    # -- progress ------------------------------------------------------------------

    async def save_progress(self, batch: Sequence[RunProgress]) -> set[str]:
        lost: set[str] = set()
        for item in batch:
            transition = state.progress(item)
            handler = self._handlers.get(item.handler_id)
            if handler is None or not transition.requires.admits(handler):
                lost.add(item.handler_id)
                continue
            log = self._events.setdefault(item.run_id, [])
            last = log[-1].sequence if log else -1
            log.extend(e for e in item.events if e.sequence > last)  # a retry adds nothing
            for inbox_id in item.consumed_inbox:
                self._inbox.pop(inbox_id, None)
            self._transition(handler, transition)
        self._evict_completed()
        written = {i.run_id for i in batch if i.events and i.handler_id not in lost}
        self.notifications.published("events", written)
        return lost

    def _transition(self, handler: PersistentHandler, transition: state.Transition) -> None:
        """Write ``transition``'s columns to ``handler`` (admitted); its JSON stays text."""
        sets, key = transition.sets, handler.handler_id
        update: dict[str, object] = dict(sets)
        # The row's own values of these columns are stale until read (see _memory_rows).
        if "ctx" in sets:
            self._keep_encoded(key, "ctx", sets["ctx"])
            update["ctx"] = None
        if "result" in sets:
            self._keep_encoded(key, "result", sets["result"])
            update["result"] = None
        self._change(handler, update)
        if transition.ends_run:
            self._clear_inbox(handler.handler_id)

    async def finalize_handler(
        self,
        handler_id: str,
        *,
        status: Status,
        error: str | None,
        event: StoredEvent,
        at: datetime,
    ) -> bool:
        handler = self._handlers.get(handler_id)
        transition = state.finalize(status, error=error, at=at)
        if handler is None or handler.run_id is None or not transition.requires.admits(handler):
            return False
        log = self._events.setdefault(handler.run_id, [])
        sequence = log[-1].sequence + 1 if log else 0
        log.append(_with_sequence(event, sequence))
        self._transition(handler, transition)
        self.notifications.published("wake", [handler_id])
        return True

    async def reopen_handler(
        self, handler_id: str, *, run_id: str, ctx: dict[str, Any] | None, at: datetime
    ) -> bool:
        handler = self._handlers.get(handler_id)
        transition = state.reopen(run_id, ctx=dump_json(ctx), at=at)
        if handler is None or not transition.requires.admits(handler):
            return False
        log = self._events.get(run_id, [])
        self._events[run_id] = [dataclasses.replace(e, terminal=False) for e in log]
        self._transition(handler, transition)
        return True

    # -- retention -----------------------------------------------------------------

    async def prune(
        self,
        *,
        older_than: datetime | timedelta,
        statuses: Collection[FinishedStatus] = FINISHED_STATUSES,
        batch_size: int = DEFAULT_PRUNE_BATCH,
        dry_run: bool = False,
        exclusive: bool = False,
        pause: float = 0.0,
    ) -> int:
        cutoff, chosen = prune_cutoff(older_than), set(finished_statuses(statuses))
        doomed = [
            h for h in self._handlers.values() if h.status in chosen and _finished_at(h) < cutoff
        ]
        if not dry_run:
            for handler in doomed:
                self._drop(handler)
        return len(doomed)

    # -- event log -----------------------------------------------------------------

    async def read_events(
        self, run_id: str, *, after_sequence: int = -1, limit: int = 1000
    ) -> list[StoredEvent]:
        log = self._events.get(run_id, [])
        return [e for e in log if e.sequence > after_sequence][:limit]

    async def last_sequences(self, run_ids: Sequence[str]) -> dict[str, int]:
        return {rid: self._events[rid][-1].sequence for rid in run_ids if self._events.get(rid)}

    # -- inbox ---------------------------------------------------------------------

    async def enqueue_event(
        self, handler_id: str, run_id: str, payload: str, step: str | None, at: datetime
    ) -> int | None:
        handler = self._handlers.get(handler_id)
        if not state.accepts_events(run_id).admits(handler):
            return None
        entry = InboxEntry(next(self._inbox_ids), handler_id, run_id, payload, step, at)
        self._inbox[entry.id] = entry
        self.notifications.published("wake", [handler_id])
        return entry.id

    async def read_inbox(self, handler_ids: Sequence[str]) -> list[InboxEntry]:
        wanted = set(handler_ids)
        return [e for e in self._inbox.values() if e.handler_id in wanted]


def _finished_at(handler: PersistentHandler) -> datetime:
    return handler.completed_at or handler.updated_at or handler.started_at


def _with_sequence(event: StoredEvent, sequence: int) -> StoredEvent:
    return StoredEvent(
        sequence, event.payload, event.event_type, event.internal, event.terminal, event.created_at
    )
