"""The durable store: SQLAlchemy 2 asyncio on SQLite (default) or PostgreSQL.

The database is chosen by URL alone::

    SqlAlchemyWorkflowStore()                                   # ./handlers.db (SQLite)
    SqlAlchemyWorkflowStore("sqlite:///data/handlers.db")       # -> sqlite+aiosqlite
    SqlAlchemyWorkflowStore("postgresql://user:pw@db/app")      # -> postgresql+asyncpg
    SqlAlchemyWorkflowStore(host_engine)                        # share a host's AsyncEngine

Every write goes through one group-commit writer per store (see ``_batch``):
concurrent writes share a transaction and a commit. Reads run on their own
connections and see only committed data.

This module is the store's interface, one short method each; its engines,
schema and writer are ``_sql_lifecycle``'s, the SQL of its reads ``_reads``'s,
of its writes ``_create``, ``_writes``, ``_progress`` and ``_ownership``'s (one lane each,
``_lanes``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import URL

from . import _create as creating
from . import _ownership as ownership
from . import _prune as pruning
from . import _reads as reads
from . import _writes as writes
from ._rows import dump_json, handler_from_row, inbox_from_row
from ._sql_lifecycle import SqlStoreLifecycle, mapped
from .base import (
    DEFAULT_PRUNE_BATCH,
    FINISHED_STATUSES,
    FinishedStatus,
    HandlerQuery,
    InboxEntry,
    PersistentHandler,
    RunProgress,
    Status,
    StoredEvent,
    finished_statuses,
    prune_cutoff,
)


class SqlAlchemyWorkflowStore(SqlStoreLifecycle):
    """Handlers, event logs and inboxes in a SQL database (SQLite or PostgreSQL).

    ``url_or_engine`` is a URL (``sqlite:///``, ``sqlite+aiosqlite:///``,
    ``postgresql://``, ``postgresql+asyncpg://``...) or a host's ``AsyncEngine``;
    ``None`` means the SQLite file ``handlers.db`` in the working directory.

    ``migrate`` decides what :meth:`start` does with a missing or old schema:
    bring it to head through the packaged Alembic migrations (the default on
    SQLite), or raise ``SchemaError`` naming the command to run (the default on
    PostgreSQL, where migrations belong to the deployment; ``migrate=True``
    migrates at startup under an advisory lock, safe with many replicas).

    On SQLite, the store's engines use WAL, ``synchronous=NORMAL``,
    ``busy_timeout`` (seconds) and ``BEGIN IMMEDIATE`` for writes.
    ``engine_options`` go to ``create_async_engine`` (pool sizes, ``connect_args``)
    for the PostgreSQL engine or the SQLite read engine; the SQLite write engine
    always holds a single connection.

    A host's engine is used as given: the store installs no pragmas or event
    listeners on it and never disposes it (:meth:`close` leaves it open). For
    SQLite the host should enable WAL and a busy timeout itself.
    """

    durable = True

    # -- the seed's interface ------------------------------------------------------

    async def query(self, query: HandlerQuery) -> list[PersistentHandler]:
        rows = await self._read(lambda conn: reads.handlers(conn, query))
        return [handler_from_row(row, self.result_classes) for row in rows]

    async def update(self, handler: PersistentHandler) -> None:
        await (await self._writes()).upsert.submit(handler)

    async def delete(self, query: HandlerQuery) -> int:
        return await (await self._writes()).delete.submit(query)

    # -- starting runs -------------------------------------------------------------

    async def create_handler(
        self, handler: PersistentHandler, *, replaces_run_id: str | None = None
    ) -> None:
        await (await self._writes()).create.submit(creating.Create(handler, replaces_run_id))

    async def get_by_idempotency_key(self, key: str) -> PersistentHandler | None:
        rows = await self._read(lambda conn: reads.by_idempotency_key(conn, key))
        return handler_from_row(rows[0], self.result_classes) if rows else None

    # -- progress ------------------------------------------------------------------

    async def save_progress(self, batch: Sequence[RunProgress]) -> set[str]:
        if not batch:
            return set()
        items: Sequence[RunProgress] = list(batch)  # the caller may reuse its list
        lost: set[str] = await (await self._writes()).progress.submit(items)
        written = {i.run_id for i in items if i.events and i.handler_id not in lost}
        self._notifications.published("events", written)
        return lost

    async def finalize_handler(
        self,
        handler_id: str,
        *,
        status: Status,
        error: str | None,
        event: StoredEvent,
        at: datetime,
    ) -> bool:
        op = writes.Finalize(handler_id, status, error, event, at)
        done: bool = await (await self._writes()).finalize.submit(op)
        if done:
            self._notifications.published("wake", [handler_id])
        return done

    async def reopen_handler(
        self, handler_id: str, *, run_id: str, ctx: dict[str, Any] | None, at: datetime
    ) -> bool:
        op = writes.Reopen(handler_id, run_id, dump_json(ctx), at)
        return await (await self._writes()).reopen.submit(op)

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
        cutoff, chosen = prune_cutoff(older_than), finished_statuses(statuses)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if dry_run:
            return await self._read(lambda conn: pruning.count(conn, cutoff, chosen))
        engines, total = await self._ready(), 0

        async def batch() -> int | None:
            # Not through the group-commit writer: a batch is its own short
            # transaction, and on PostgreSQL it runs beside the runs' writes.
            async with engines.transaction() as conn:
                return await pruning.delete_batch(
                    conn, cutoff, chosen, batch_size, exclusive=exclusive
                )

        while True:
            deleted = await mapped(batch())
            if deleted is None:
                return total
            total += deleted
            if deleted < batch_size:
                return total
            await asyncio.sleep(pause)  # let queued writes in between batches

    # -- event log -----------------------------------------------------------------

    async def read_events(
        self, run_id: str, *, after_sequence: int = -1, limit: int = 1000
    ) -> list[StoredEvent]:
        return await self._read(lambda conn: reads.events(conn, run_id, after_sequence, limit))

    async def read_new_events(
        self, positions: Mapping[str, int], *, limit: int = 1000
    ) -> dict[str, list[StoredEvent]]:
        if not positions:
            return {}
        return await self._read(lambda conn: reads.new_events(conn, positions, limit))

    async def last_sequences(self, run_ids: Sequence[str]) -> dict[str, int]:
        if not run_ids:
            return {}
        rows = await self._read(lambda conn: reads.last_sequences(conn, run_ids))
        return dict(rows)

    # -- inbox ---------------------------------------------------------------------

    async def enqueue_event(
        self, handler_id: str, run_id: str, payload: str, step: str | None, at: datetime
    ) -> int | None:
        op = writes.Enqueue(handler_id, run_id, payload, step, at)
        entry_id: int | None = await (await self._writes()).enqueue.submit(op)
        if entry_id is not None:
            self._notifications.published("wake", [handler_id])
        return entry_id

    async def read_inbox(self, handler_ids: Sequence[str]) -> list[InboxEntry]:
        if not handler_ids:
            return []
        rows = await self._read(lambda conn: reads.inbox_rows(conn, handler_ids))
        return sorted((inbox_from_row(row) for row in rows), key=lambda entry: entry.id)

    # -- ownership -----------------------------------------------------------------

    async def heartbeat(self, owner_id: str, *, now: datetime, expires_at: datetime) -> set[str]:
        beat = self._beat(owner_id, now, expires_at)
        owned: set[str] = await (await self._writes()).heartbeat.submit(beat)
        return owned

    def _beat(self, owner_id: str, now: datetime, expires_at: datetime) -> ownership.Beat:
        key = self._liveness.token_key(owner_id)
        return ownership.Beat(owner_id, now, expires_at, self._liveness.kind, key)

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
        ids = None if handler_ids is None else tuple(handler_ids)
        beat = self._beat(owner_id, now, lease_until)
        served = None if versions is None else {k: tuple(v) for k, v in versions.items()}
        dead = tuple(dead_owners)
        op = ownership.Claim(owner_id, now, lease_until, dead, ids, limit, beat, served)
        claimed: list[PersistentHandler] = await (await self._writes()).claim.submit(op)
        return claimed

    async def release_handlers(self, owner_id: str, handler_ids: Sequence[str] | None) -> None:
        ids = None if handler_ids is None else tuple(handler_ids)
        await (await self._writes()).release.submit((owner_id, ids))
        self._notifications.published("free", ids or ["*"])

    async def list_owners(self) -> set[str]:
        return await self._read(reads.owners)

    async def count_queued(self) -> dict[str, int]:
        return await self._read(reads.queued)


class SqliteWorkflowStore(SqlAlchemyWorkflowStore):
    """The seed's spelling: a :class:`SqlAlchemyWorkflowStore` on the SQLite file ``db_path``."""

    def __init__(self, db_path: str | os.PathLike[str] = "handlers.db", **kwargs: Any) -> None:
        super().__init__(URL.create("sqlite+aiosqlite", database=os.fspath(db_path)), **kwargs)
