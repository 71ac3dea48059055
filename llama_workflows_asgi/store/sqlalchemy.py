"""The durable store: SQLAlchemy 2 asyncio on SQLite (default) or PostgreSQL.

The database is chosen by URL alone::

    SqlAlchemyWorkflowStore()                                   # ./handlers.db (SQLite)
    SqlAlchemyWorkflowStore("sqlite:///data/handlers.db")       # -> sqlite+aiosqlite
    SqlAlchemyWorkflowStore("postgresql://user:pw@db/app")      # -> postgresql+asyncpg
    SqlAlchemyWorkflowStore(host_engine)                        # share a host's AsyncEngine

Every write goes through one group-commit writer per store (see ``_batch``):
concurrent writes share a transaction and a commit. Reads run on their own
connections and see only committed data.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import URL, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import _ownership as ownership
from . import _progress as progress
from . import _prune as pruning
from . import _writes as writes
from . import migrate as migrations
from ._batch import GroupCommit, Poke, Source
from ._engines import DEFAULT_URL, Engines, create_engines, is_memory_sqlite, normalize_url
from ._errors import unavailable
from ._lanes import Lanes, Publishing
from ._liveness_pg import PostgresLiveness
from ._notify_pg import PostgresNotifications
from ._queries import chunks, listing
from ._rows import dump_json, event_from_row, handler_from_row, inbox_from_row
from .base import (
    DEFAULT_PRUNE_BATCH,
    FINISHED_STATUSES,
    AbstractWorkflowStore,
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
from .liveness import FileLockLiveness, Liveness, LocalLiveness
from .notifications import Notifications
from .schema import events_table, handlers_table, inbox_table, owners_table

T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")


class SqlAlchemyWorkflowStore(AbstractWorkflowStore):
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

    def __init__(
        self,
        url_or_engine: str | URL | AsyncEngine | None = None,
        *,
        migrate: bool | None = None,
        busy_timeout: float = 5.0,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(url_or_engine, AsyncEngine):
            self._host_engine: AsyncEngine | None = url_or_engine
            self.url = url_or_engine.url
        else:
            self._host_engine = None
            self.url = normalize_url(url_or_engine or DEFAULT_URL)
        self.migrate = migrate if migrate is not None else self.url.get_backend_name() == "sqlite"
        self.busy_timeout = busy_timeout
        self._engine_options = dict(engine_options or {})
        self._engines: Engines | None = None
        self._writer: GroupCommit[AsyncConnection] | None = None
        self._lanes: Lanes | None = None
        self._starting = asyncio.Lock()
        self._liveness = _liveness_for(self.url, self._engine_options)
        self._notifications = _notifications_for(self.url, self._engine_options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url.render_as_string(hide_password=True)!r})"

    # -- lifecycle -----------------------------------------------------------------

    @property
    def write_engine(self) -> AsyncEngine:
        """The engine writes go through (the store must be started)."""
        return self._require().write

    @property
    def read_engine(self) -> AsyncEngine:
        """The engine reads go through (the write engine on PostgreSQL)."""
        return self._require().read

    @property
    def liveness(self) -> Liveness:
        """Advisory locks on PostgreSQL, ``flock`` files beside a SQLite file."""
        return self._liveness

    @property
    def notifications(self) -> Notifications:
        """``LISTEN/NOTIFY`` on PostgreSQL; within this process on SQLite."""
        return self._notifications

    @property
    def commits(self) -> int:
        """How many group-commit transactions this store has committed."""
        return 0 if self._writer is None else self._writer.transactions

    async def start(self) -> None:
        """Create the engines and check or migrate the schema (see the class docstring).

        Raises ``SchemaError`` for a missing, old or unknown schema the store may
        not migrate, ``StoreUnavailableError`` if the database cannot be reached.
        """
        async with self._starting:
            if self._engines is not None:
                return
            engines = self._create_engines()
            try:
                await _mapped(self._prepare_schema(engines))
            except BaseException:
                await engines.dispose()
                raise
            self._engines = engines
            self._writer = GroupCommit(transact=engines.writer())
            self._lanes = Lanes(self._writer)

    async def close(self) -> None:
        """Finish queued writes, drop liveness tokens, dispose the engines this store created."""
        await self._liveness.release()
        await self._notifications.close()
        writer, engines = self._writer, self._engines
        self._writer = self._engines = self._lanes = None
        if writer is not None:
            await writer.aclose()
        if engines is not None:
            await engines.dispose()

    async def ping(self) -> None:
        """Run ``SELECT 1``; raises ``StoreUnavailableError`` if it fails."""
        await self._read(lambda conn: conn.execute(select(1)))

    def _create_engines(self) -> Engines:
        if self._host_engine is not None:
            return Engines(self._host_engine, self._host_engine, owned=False)
        return create_engines(
            self.url, busy_timeout=self.busy_timeout, options=dict(self._engine_options)
        )

    async def _prepare_schema(self, engines: Engines) -> None:
        current = await migrations.current_revision(engines.read)
        if current == migrations.head_revision():
            return
        # A revision we do not know is newer than this package: never touch it.
        if self.migrate and (current is None or migrations.is_known_revision(current)):
            await migrations.upgrade(engines.write)
        await migrations.check_schema(engines.read)

    def _require(self) -> Engines:
        if self._engines is None:
            raise RuntimeError(f"{self!r} is not started")
        return self._engines

    async def _ready(self) -> Engines:
        if self._engines is None:
            await self.start()
        return self._require()

    # -- plumbing ------------------------------------------------------------------

    async def _read(self, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        engines = await self._ready()

        async def run() -> T:
            async with engines.read.connect() as conn:
                return await read(conn)

        return await _mapped(run())

    async def _writes(self) -> Lanes:
        await self._ready()
        assert self._lanes is not None
        return self._lanes

    def progress_feed(self, source: Source[RunProgress, bool]) -> Poke:
        """The run service's progress joins this store's group commit (one writer task)."""
        assert self._writer is not None, f"{self!r} is not started"
        publishing = Publishing(source, self._notifications)
        return self._writer.feed(progress.save_run_progress, publishing)

    # -- the seed's interface ------------------------------------------------------

    async def query(self, query: HandlerQuery) -> list[PersistentHandler]:
        rows = await self._read(lambda conn: _all_mappings(conn, listing(query)))
        return [handler_from_row(row, self.result_classes) for row in rows]

    async def update(self, handler: PersistentHandler) -> None:
        await (await self._writes()).upsert.submit(handler)

    async def delete(self, query: HandlerQuery) -> int:
        return await (await self._writes()).delete.submit(query)

    # -- starting runs -------------------------------------------------------------

    async def create_handler(
        self, handler: PersistentHandler, *, replaces_run_id: str | None = None
    ) -> None:
        await (await self._writes()).create.submit(writes.Create(handler, replaces_run_id))

    async def get_by_idempotency_key(self, key: str) -> PersistentHandler | None:
        stmt = select(handlers_table).where(handlers_table.c.idempotency_key == key)
        rows = await self._read(lambda conn: _all_mappings(conn, stmt))
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
            deleted = await _mapped(batch())
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
        e = events_table.c
        stmt = (
            select(events_table)
            .where(e.run_id == run_id, e.sequence > after_sequence)
            .order_by(e.sequence)
            .limit(limit)
        )
        rows = await self._read(lambda conn: _all_mappings(conn, stmt))
        return [event_from_row(row) for row in rows]

    async def read_new_events(
        self, positions: Mapping[str, int], *, limit: int = 1000
    ) -> dict[str, list[StoredEvent]]:
        if not positions:
            return {}
        e = events_table.c
        # One index range per run ((run_id, sequence) is the primary key): both
        # PostgreSQL (a BitmapOr) and SQLite (its OR optimisation) read only new rows.
        wanted = [and_(e.run_id == run, e.sequence > after) for run, after in positions.items()]
        stmt = select(events_table).where(or_(*wanted)).order_by(e.run_id, e.sequence).limit(limit)
        found: dict[str, list[StoredEvent]] = {}
        for row in await self._read(lambda conn: _all_mappings(conn, stmt)):
            found.setdefault(row["run_id"], []).append(event_from_row(row))
        return found

    async def last_sequences(self, run_ids: Sequence[str]) -> dict[str, int]:
        if not run_ids:
            return {}
        rows = await self._read(lambda conn: _last_sequences(conn, run_ids))
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
        rows = await self._read(lambda conn: _inbox_rows(conn, handler_ids))
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
        stmt = select(owners_table.c.owner_id)
        rows = await self._read(lambda conn: _all_rows(conn, stmt))
        return {owner for (owner,) in rows}

    async def count_queued(self) -> dict[str, int]:
        h = handlers_table.c
        stmt = (
            select(h.workflow_name, func.count())
            .where(h.status == "running", h.owner_id.is_(None), h.idle_since.is_(None))
            .group_by(h.workflow_name)
        )
        rows = await self._read(lambda conn: _all_rows(conn, stmt))
        return {name: count for name, count in rows}


class SqliteWorkflowStore(SqlAlchemyWorkflowStore):
    """The seed's spelling: a :class:`SqlAlchemyWorkflowStore` on the SQLite file ``db_path``."""

    def __init__(self, db_path: str | os.PathLike[str] = "handlers.db", **kwargs: Any) -> None:
        super().__init__(URL.create("sqlite+aiosqlite", database=os.fspath(db_path)), **kwargs)


def _liveness_for(url: URL, engine_options: Mapping[str, Any]) -> Liveness:
    if url.get_backend_name() == "postgresql":
        return PostgresLiveness(url, connect_args=engine_options.get("connect_args"))
    if is_memory_sqlite(url) or url.database is None:
        return LocalLiveness()
    return FileLockLiveness(url.database)


def _notifications_for(url: URL, engine_options: Mapping[str, Any]) -> Notifications:
    if url.get_backend_name() == "postgresql":
        return PostgresNotifications(url, connect_args=engine_options.get("connect_args"))
    return Notifications()


async def _mapped(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``, turning outage errors into ``StoreUnavailableError``."""
    try:
        return await awaitable
    except Exception as error:
        outage = unavailable(error)
        if outage is None or outage is error:
            raise
        raise outage from error


async def _all_mappings(conn: AsyncConnection, stmt: Any) -> list[Mapping[Any, Any]]:
    return list((await conn.execute(stmt)).mappings().all())


async def _last_sequences(conn: AsyncConnection, run_ids: Sequence[str]) -> list[Any]:
    e = events_table.c
    rows: list[Any] = []
    for ids in chunks(list(dict.fromkeys(run_ids))):
        stmt = select(e.run_id, func.max(e.sequence)).where(e.run_id.in_(ids)).group_by(e.run_id)
        rows.extend(await _all_rows(conn, stmt))
    return rows


async def _inbox_rows(conn: AsyncConnection, handler_ids: Sequence[str]) -> list[Mapping[Any, Any]]:
    rows: list[Mapping[Any, Any]] = []
    for ids in chunks(list(dict.fromkeys(handler_ids))):
        stmt = select(inbox_table).where(inbox_table.c.handler_id.in_(ids))
        rows.extend(await _all_mappings(conn, stmt))
    return rows


async def _all_rows(conn: AsyncConnection, stmt: Any) -> list[Any]:
    return list((await conn.execute(stmt)).all())
