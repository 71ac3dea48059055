"""The memory store's rows: handlers, event logs, inboxes and owners in dictionaries.

:class:`MemoryRows` is the base of ``MemoryWorkflowStore``. It holds the
dictionaries and the rules of a row as such: writing a handler keeps the count
of finished ones, dropping it drops its log and inbox, an idempotency key
belongs to one handler, and once more than ``max_completed`` handlers have
finished the oldest go first (a heap of their ages, so eviction costs nothing
per write below the limit).

The JSON columns a write sets (``ctx``, ``result``) arrive as the text the
service has just encoded; a row keeps that text and decodes it only when it is
read (:meth:`MemoryRows._read`), as a SQL store does: most rows are written
several times and read back once, or never (a live run's waiters get its final
row from the run itself).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ._rows import load_json
from .base import (
    AbstractWorkflowStore,
    HandlerQuery,
    IdempotencyKeyExistsError,
    InboxEntry,
    PersistentHandler,
    StoredEvent,
)
from .liveness import LocalLiveness


class MemoryRows(AbstractWorkflowStore):
    """The dictionaries of a memory store and what writing or dropping a row keeps true."""

    def __init__(self, max_completed: int | None = 1000) -> None:
        if max_completed is not None and max_completed < 0:
            raise ValueError("max_completed must be 0 or more, or None to keep every handler")
        self.max_completed = max_completed
        self._handlers: dict[str, PersistentHandler] = {}
        self._events: dict[str, list[StoredEvent]] = {}
        self._inbox: dict[int, InboxEntry] = {}
        self._inbox_ids = itertools.count(1)
        self._owners: dict[str, OwnerBeat] = {}
        self._liveness = LocalLiveness()
        # Finished handlers, counted as rows are written, and a heap of their
        # ages (stale entries are skipped): eviction costs nothing per write
        # below the limit, and a heap pop per handler dropped above it.
        self._finished = 0
        self._ages: list[tuple[datetime, str]] = []
        # JSON text written to a row and not decoded since, by handler id and
        # column; the row's own value of such a column is stale until read.
        self._encoded: dict[str, dict[str, str]] = {}

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

    def _replace(self, handler: PersistentHandler) -> None:
        """Write ``handler`` as the whole row (no column of the previous one stays)."""
        self._encoded.pop(handler.handler_id, None)
        self._put(handler)

    def _keep_encoded(self, handler_id: str, column: str, text: str | None) -> None:
        """Keep ``text`` as ``column``'s value, decoded when the row is read."""
        encoded = self._encoded.get(handler_id)
        if text is not None:
            if encoded is None:
                encoded = self._encoded[handler_id] = {}
            encoded[column] = text
        elif encoded is not None:
            encoded.pop(column, None)  # cleared: the row holds None already

    def _read(self, handler: PersistentHandler, *, ctx: bool = True) -> PersistentHandler:
        """``handler``'s stored row with its JSON columns decoded (its ``ctx`` only if asked).

        What is decoded stays decoded: a row read again costs nothing more.
        """
        encoded = self._encoded.get(handler.handler_id)
        if not encoded or not (ctx or "result" in encoded):
            return handler
        update: dict[str, object] = {}
        if ctx and "ctx" in encoded:
            update["ctx"] = load_json(encoded.pop("ctx"))
        if "result" in encoded:
            stored = load_json(encoded.pop("result"))
            handler = handler.with_stored_result(stored, self.result_classes)
        if not encoded:
            del self._encoded[handler.handler_id]
        if update:
            handler = handler.model_copy(update=update)
        self._handlers[handler.handler_id] = handler
        return handler

    def _put(self, handler: PersistentHandler) -> None:
        """Write ``handler``'s row, keeping the count of finished rows."""
        previous = self._handlers.get(handler.handler_id)
        self._handlers[handler.handler_id] = handler
        self._counted(handler, previous is not None and previous.is_terminal)

    def _change(self, row: PersistentHandler, changes: Mapping[str, object]) -> None:
        """Set ``changes`` on the stored ``row`` itself (as ``model_copy(update=...)`` would).

        No copy per write: the row objects are the store's own, every read
        hands out a copy of one.
        """
        was_terminal = row.is_terminal
        row.__dict__.update(changes)
        self._counted(row, was_terminal)

    def _counted(self, handler: PersistentHandler, was_terminal: bool) -> None:
        self._finished += handler.is_terminal - was_terminal
        if handler.is_terminal and self.max_completed is not None:
            heapq.heappush(self._ages, (_age(handler), handler.handler_id))

    def _drop(self, handler: PersistentHandler) -> None:
        dropped = self._handlers.pop(handler.handler_id, None)
        self._encoded.pop(handler.handler_id, None)
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


def matching(rows: Iterable[PersistentHandler], query: HandlerQuery) -> Iterable[PersistentHandler]:
    """The rows ``query`` filters in (its order and page aside)."""
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


def order_key(handler: PersistentHandler) -> tuple[datetime, str]:
    """Listing and claiming order: oldest first, then by id."""
    return handler.started_at, handler.handler_id


@dataclass(frozen=True)
class OwnerBeat:
    """An owner's last heartbeat (the memory store's owners row)."""

    heartbeat_at: datetime
    expires_at: datetime
