"""Run ownership writes: heartbeats, claims and releases (see ``base`` and ``liveness``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, delete, exists, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ._notify_pg import notify
from ._queries import chunks, claimable, served
from ._rows import handler_from_row
from ._writes import c, handlers, one_by_one, owners, upsert_insert
from .base import PersistentHandler
from .schema import UtcDateTime


@dataclass(frozen=True)
class Beat:
    """An owner's heartbeat: who, until when, and its liveness token."""

    owner_id: str
    now: datetime
    expires_at: datetime
    token_kind: str | None = None
    token_key: int | None = None


async def _beat(conn: AsyncConnection, beat: Beat) -> None:
    """Create or renew ``beat``'s owner row: one row, whatever the owner holds."""
    values = {
        "owner_id": beat.owner_id,
        "heartbeat_at": beat.now,
        "expires_at": beat.expires_at,
        "token_kind": beat.token_kind,
        "token_key": beat.token_key,
    }
    insert_ = upsert_insert(conn)(owners).values(values)
    renewed = {name: insert_.excluded[name] for name in values if name != "owner_id"}
    await conn.execute(
        insert_.on_conflict_do_update(index_elements=[owners.c.owner_id], set_=renewed)
    )


async def _heartbeat(conn: AsyncConnection, beat: Beat) -> set[str]:
    await _beat(conn, beat)
    # Lapsed owners holding nothing any more: an absent row means the same.
    holds = exists().where(c.owner_id == owners.c.owner_id, c.status == "running")
    lapsed = owners.c.expires_at < literal(beat.now, UtcDateTime())
    await conn.execute(delete(owners).where(lapsed, ~holds))
    owned = select(c.handler_id).where(c.owner_id == beat.owner_id, c.status == "running")
    return set((await conn.execute(owned)).scalars())


heartbeat = one_by_one(_heartbeat)


@dataclass(frozen=True)
class Claim:
    """Payload of :func:`claim_handlers`."""

    owner_id: str
    now: datetime
    lease_until: datetime
    dead_owners: tuple[str, ...]
    handler_ids: tuple[str, ...] | None
    limit: int
    beat: Beat
    versions: Mapping[str, tuple[str, ...]] | None = None


async def _claim_handlers(conn: AsyncConnection, op: Claim) -> list[PersistentHandler]:
    candidate = handlers.alias("candidate")
    pick = (
        select(candidate.c.handler_id, candidate.c.owner_id)
        .where(claimable(candidate, now=op.now, dead_owners=op.dead_owners))
        .where(served(candidate, op.versions))
        .order_by(candidate.c.started_at, candidate.c.handler_id)
        .limit(op.limit)
        # Rows another process is claiming right now are skipped, not waited for;
        # the picked ones stay locked until this transaction ends.
        .with_for_update(skip_locked=True, of=candidate)
    )
    if op.handler_ids is not None:
        pick = pick.where(candidate.c.handler_id.in_(op.handler_ids))
    # Picked first, then updated by id: the previous owners are reported (an
    # UPDATE's RETURNING only sees new values), and exactly the locked rows
    # are taken.
    previous = {row.handler_id: row.owner_id for row in await conn.execute(pick)}
    if not previous:
        return []
    await _beat(conn, op.beat)  # what we take must not look abandoned
    stmt = (
        update(handlers)
        .where(c.handler_id.in_(list(previous)))
        .where(claimable(handlers, now=op.now, dead_owners=op.dead_owners))
        .values(owner_id=op.owner_id, lease_expires_at=op.lease_until)
        # Taking a run from an owner that did not release it is a resume attempt.
        .values(resume_attempts=c.resume_attempts + case((c.owner_id.is_(None), 0), else_=1))
        .returning(*handlers.c)
    )
    claimed = [
        handler_from_row(row).model_copy(
            update={"previous_owner_id": previous.get(row["handler_id"])}
        )
        for row in (await conn.execute(stmt)).mappings()
    ]
    return sorted(claimed, key=lambda h: (h.started_at, h.handler_id))


claim_handlers = one_by_one(_claim_handlers)


async def _release_handlers(conn: AsyncConnection, op: tuple[str, tuple[str, ...] | None]) -> None:
    owner_id, handler_ids = op
    await notify(conn, {"free": handler_ids or ["*"]})
    stmt = (
        update(handlers).where(c.owner_id == owner_id).values(owner_id=None, lease_expires_at=None)
    )
    if handler_ids is None:
        await conn.execute(stmt)
        await conn.execute(delete(owners).where(owners.c.owner_id == owner_id))
        return
    for ids in chunks(handler_ids):
        await conn.execute(stmt.where(c.handler_id.in_(ids)))


release_handlers = one_by_one(_release_handlers)
