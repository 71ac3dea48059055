"""An in-process store: for tests, development and runs that need not survive a restart."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import state
from ._rows import dump_json, load_json
from .base import (
    DEFAULT_PRUNE_BATCH,
    FINISHED_STATUSES,
    AbstractWorkflowStore,
    FinishedStatus,
    HandlerExistsError,
    HandlerQuery,
    IdempotencyKeyExistsError,
    InboxEntry,
    PersistentHandler,
    RunProgress,
    Status,
    StoredEvent,
    finished_statuses,
    prune_cutoff,
)
from .liveness import Liveness, LocalLiveness


class MemoryWorkflowStore(AbstractWorkflowStore):
    """Keeps everything in dictionaries; nothing survives the process.

    Once more than ``max_completed`` handlers have finished, the oldest finished
    ones are dropped with their events (``None`` keeps them all; a negative
    number raises ``ValueError``).
    """

    durable = False

    def __init__(self, max_completed: int | None = 1000) -> None:
        if max_completed is not None and max_completed < 0:
            raise ValueError("max_completed must be 0 or more, or None to keep every handler")
        self.max_completed = max_completed
        self._handlers: dict[str, PersistentHandler] = {}
        self._events: dict[str, list[StoredEvent]] = {}
        self._inbox: dict[int, InboxEntry] = {}
        self._inbox_ids = itertools.count(1)
        self._owners: dict[str, _OwnerBeat] = {}
        self._liveness = LocalLiveness()
        # Finished handlers, counted as rows are written, and a heap of their
        # ages (stale entries are skipped): eviction costs nothing per write
        # below the limit, and a heap pop per handler dropped above it.
        self._finished = 0
        self._ages: list[tuple[datetime, str]] = []

    @property
    def liveness(self) -> Liveness:
        """In-process tokens: an owner of this store is alive while its service runs."""
        return self._liveness

    async def close(self) -> None:
        """Stop the writer of the run service's progress (the data stays)."""
        await self.close_progress_writer()

    # -- seed interface ------------------------------------------------------------

    async def query(self, query: HandlerQuery) -> list[PersistentHandler]:
        rows = sorted(_filter(self._handlers.values(), query), key=_order_key)
        if query.descending:
            rows.reverse()
        if query.after is not None:
            mark = (query.after.started_at, query.after.handler_id)
            rows = [
                h
                for h in rows
                if (_order_key(h) < mark if query.descending else _order_key(h) > mark)
            ]
        if query.limit is not None:
            rows = rows[: query.limit]
        return [h.model_copy(update=None if query.load_ctx else {"ctx": None}) for h in rows]

    async def update(self, handler: PersistentHandler) -> None:
        self._check_key_free(handler)
        existing = self._handlers.get(handler.handler_id)
        if existing is not None and existing.run_id not in (None, handler.run_id):
            self._drop_replaced_run(existing.run_id, handler)
        self._put(handler.model_copy())
        self._evict_completed()

    async def delete(self, query: HandlerQuery) -> int:
        doomed = list(_filter(self._handlers.values(), query))
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
        self._put(handler.model_copy())
        owner, until = handler.owner_id, handler.lease_expires_at
        if owner is not None and until is not None:  # its writer is alive: see _writes
            beat = self._owners.get(owner)
            if beat is not None and beat.expires_at < until:
                self._owners[owner] = dataclasses.replace(beat, expires_at=until)

    async def get_by_idempotency_key(self, key: str) -> PersistentHandler | None:
        found = (h for h in self._handlers.values() if h.idempotency_key == key)
        match = next(found, None)
        return None if match is None else match.model_copy()

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
        """Write ``transition``'s columns to ``handler`` (admitted), decoding its JSON."""
        sets = transition.sets
        update: dict[str, object] = {k: v for k, v in sets.items() if k != "result"}
        if "ctx" in sets:
            update["ctx"] = load_json(sets["ctx"])
        updated = handler.model_copy(update=update)
        if "result" in sets:
            updated = updated.with_stored_result(load_json(sets["result"]), self.result_classes)
        if transition.ends_run:
            self._clear_inbox(handler.handler_id)
        self._put(updated)

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

    # -- ownership -----------------------------------------------------------------

    async def heartbeat(self, owner_id: str, *, now: datetime, expires_at: datetime) -> set[str]:
        self._owners[owner_id] = _OwnerBeat(now, expires_at)
        holding = {h.owner_id for h in self._handlers.values() if h.status == "running"}
        for other, beat in list(self._owners.items()):
            if beat.expires_at < now and other not in holding:
                del self._owners[other]  # lapsed and holding nothing: an absent row says the same
        return {
            hid
            for hid, h in self._handlers.items()
            if h.owner_id == owner_id and h.status == "running"
        }

    async def claim_handlers(
        self,
        owner_id: str,
        *,
        now: datetime,
        lease_until: datetime,
        dead_owners: Sequence[str] = (),
        handler_ids: Sequence[str] | None = None,
        limit: int = 100,
        versions: Mapping[str, Sequence[str]] | None = None,
    ) -> list[PersistentHandler]:
        # A claim renews the claimer's heartbeat first (as the SQL store does): its own
        # rows are never "lapsed" to it.
        dead = (set(dead_owners) | self._lapsed(now)) - {owner_id}
        waiting = {e.handler_id for e in self._inbox.values()}
        pool = self._handlers.values() if handler_ids is None else self._pick(handler_ids)
        claimed: list[PersistentHandler] = []
        for handler in sorted(pool, key=_order_key):
            if len(claimed) >= limit:
                break
            if not _claimable(handler, dead, waiting) or not _served(handler, versions):
                continue
            attempts = handler.resume_attempts + (handler.owner_id is not None)
            updated = handler.model_copy(
                update={
                    "owner_id": owner_id,
                    "lease_expires_at": lease_until,
                    "resume_attempts": attempts,
                }
            )
            self._put(updated)
            claimed.append(updated.model_copy(update={"previous_owner_id": handler.owner_id}))
        if claimed:
            self._owners[owner_id] = _OwnerBeat(now, lease_until)
        return claimed

    def _lapsed(self, now: datetime) -> set[str]:
        """Owners of running handlers whose heartbeat is not alive at ``now``."""
        owners = {h.owner_id for h in self._handlers.values() if h.owner_id is not None}
        return {o for o in owners if o not in self._owners or self._owners[o].expires_at < now}

    async def release_handlers(self, owner_id: str, handler_ids: Sequence[str] | None) -> None:
        pool = self._handlers.values() if handler_ids is None else self._pick(handler_ids)
        for handler in list(pool):
            if handler.owner_id == owner_id:
                self._put(handler.model_copy(update={"owner_id": None, "lease_expires_at": None}))
        if handler_ids is None:
            self._owners.pop(owner_id, None)
        self.notifications.published("free", handler_ids or ["*"])

    async def list_owners(self) -> set[str]:
        return set(self._owners)

    # -- helpers -------------------------------------------------------------------

    def _check_key_free(self, handler: PersistentHandler) -> None:
        # The row being written (or replaced) does not conflict with itself.
        key = handler.idempotency_key
        if key is not None and any(
            h.idempotency_key == key and h.handler_id != handler.handler_id
            for h in self._handlers.values()
        ):
            raise IdempotencyKeyExistsError(key)

    def _drop_replaced_run(self, old_run_id: str, handler: PersistentHandler) -> None:
        # The row now holds another run: the old run's log and inbox would be orphans.
        self._events.pop(old_run_id, None)
        for inbox_id, entry in list(self._inbox.items()):
            if entry.handler_id == handler.handler_id and entry.run_id != handler.run_id:
                del self._inbox[inbox_id]

    def _pick(self, handler_ids: Sequence[str]) -> list[PersistentHandler]:
        # dict.fromkeys: a repeated id must not be claimed twice.
        return [self._handlers[h] for h in dict.fromkeys(handler_ids) if h in self._handlers]

    def _put(self, handler: PersistentHandler) -> None:
        """Write ``handler``'s row, keeping the count of finished rows."""
        previous = self._handlers.get(handler.handler_id)
        self._handlers[handler.handler_id] = handler
        self._finished += handler.is_terminal - (previous is not None and previous.is_terminal)
        if handler.is_terminal and self.max_completed is not None:
            heapq.heappush(self._ages, (_age(handler), handler.handler_id))

    def _drop(self, handler: PersistentHandler) -> None:
        dropped = self._handlers.pop(handler.handler_id, None)
        self._finished -= dropped is not None and dropped.is_terminal
        if handler.run_id is not None:
            self._events.pop(handler.run_id, None)
        self._clear_inbox(handler.handler_id)

    def _clear_inbox(self, handler_id: str) -> None:
        for inbox_id in [i for i, e in self._inbox.items() if e.handler_id == handler_id]:
            del self._inbox[inbox_id]

    def _evict_completed(self) -> None:
        """Drop the oldest finished handlers beyond ``max_completed``."""
        if self.max_completed is None:
            return
        while self._finished > self.max_completed and self._ages:
            age, handler_id = heapq.heappop(self._ages)
            handler = self._handlers.get(handler_id)
            if handler is not None and handler.is_terminal and _age(handler) == age:
                self._drop(handler)
        if len(self._ages) > 2 * self._finished + 64:  # mostly stale entries: rebuild
            finished = (h for h in self._handlers.values() if h.is_terminal)
            self._ages = [(_age(h), h.handler_id) for h in finished]
            heapq.heapify(self._ages)


def _filter(rows: Iterable[PersistentHandler], query: HandlerQuery) -> Iterable[PersistentHandler]:
    for h in rows:
        if query.handler_id_in is not None and h.handler_id not in query.handler_id_in:
            continue
        if query.workflow_name_in is not None and h.workflow_name not in query.workflow_name_in:
            continue
        if query.status_in is not None and h.status not in query.status_in:
            continue
        if query.principal_in is not None and h.principal not in query.principal_in:
            continue
        if query.version_in is not None and h.version not in query.version_in:
            continue
        yield h


def _age(handler: PersistentHandler) -> datetime:
    """Which finished handlers go first when ``max_completed`` is exceeded."""
    return handler.completed_at or handler.started_at


def _finished_at(handler: PersistentHandler) -> datetime:
    return handler.completed_at or handler.updated_at or handler.started_at


def _order_key(handler: PersistentHandler) -> tuple[datetime, str]:
    return handler.started_at, handler.handler_id


@dataclass(frozen=True)
class _OwnerBeat:
    """An owner's last heartbeat (the memory store's owners row)."""

    heartbeat_at: datetime
    expires_at: datetime


def _claimable(handler: PersistentHandler, gone: set[str], waiting: set[str]) -> bool:
    """Running, not idle unless an event waits, and unowned or owned by a ``gone`` owner."""
    if handler.status != "running":
        return False
    if handler.idle_since is not None and handler.handler_id not in waiting:
        return False
    return handler.owner_id is None or handler.owner_id in gone


def _served(handler: PersistentHandler, versions: Mapping[str, Sequence[str]] | None) -> bool:
    if versions is None:
        return True
    served = versions.get(handler.workflow_name)
    return served is not None and (handler.version is None or handler.version in served)


def _with_sequence(event: StoredEvent, sequence: int) -> StoredEvent:
    return StoredEvent(
        sequence, event.payload, event.event_type, event.internal, event.terminal, event.created_at
    )
