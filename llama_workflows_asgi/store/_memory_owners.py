"""The memory store's ownership: heartbeats, claims and releases over its rows.

The same rules as the SQL store's (``_ownership``, ``_queries.claimable``): a
claim renews the claimer's heartbeat, takes running rows that are unowned or
owned by a dead or lapsed owner (idle ones only when an event waits), of the
served versions only, oldest first; an owner's row lapses once its runs are
gone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from ._memory_rows import MemoryRows, OwnerBeat, order_key
from .base import PersistentHandler


class MemoryOwnership(MemoryRows):
    """Which owner holds which run, in a memory store."""

    async def heartbeat(self, owner_id: str, *, now: datetime, expires_at: datetime) -> set[str]:
        self._owners[owner_id] = OwnerBeat(now, expires_at)
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
        # Filtered before sorting: most rows (the finished ones kept) are never claimable.
        candidates = [h for h in pool if _claimable(h, dead, waiting) and _served(h, versions)]
        for handler in sorted(candidates, key=order_key)[: max(limit, 0)]:
            attempts = handler.resume_attempts + (handler.owner_id is not None)
            updated = self._read(handler).model_copy(
                update={
                    "owner_id": owner_id,
                    "lease_expires_at": lease_until,
                    "resume_attempts": attempts,
                }
            )
            self._put(updated)
            claimed.append(updated.model_copy(update={"previous_owner_id": handler.owner_id}))
        if claimed:
            self._owners[owner_id] = OwnerBeat(now, lease_until)
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
