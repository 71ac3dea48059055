"""The SQL store's lifecycle: its engines, its schema, its writer, and the parts its URL decides.

:class:`SqlStoreLifecycle` is the base of ``SqlAlchemyWorkflowStore``: it
turns the URL (or a host's engine) into engines, checks or migrates the schema
on :meth:`~SqlStoreLifecycle.start`, owns the one group-commit writer and its
lanes (``_lanes``), and picks liveness and notifications by dialect. Every read
of the store runs through ``_read`` (its own connection, outages mapped to
``StoreUnavailableError``), every write through ``_writes``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import URL, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import _progress as progress
from . import migrate as migrations
from ._batch import GroupCommit, Poke, Source
from ._engines import DEFAULT_URL, Engines, create_engines, is_memory_sqlite, normalize_url
from ._errors import unavailable
from ._lanes import Lanes, Publishing
from ._liveness_pg import PostgresLiveness
from ._notify_pg import PostgresNotifications
from .base import AbstractWorkflowStore, RunProgress
from .liveness import FileLockLiveness, Liveness, LocalLiveness
from .notifications import Notifications

T = TypeVar("T")


class SqlStoreLifecycle(AbstractWorkflowStore):
    """Engines, schema, writer, liveness and notifications of a SQL store (see the module)."""

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
        """Create the engines and check or migrate the schema (see ``SqlAlchemyWorkflowStore``).

        Raises ``SchemaError`` for a missing, old or unknown schema the store may
        not migrate, ``StoreUnavailableError`` if the database cannot be reached.
        """
        async with self._starting:
            if self._engines is not None:
                return
            engines = self._create_engines()
            try:
                await mapped(self._prepare_schema(engines))
            except BaseException:
                await engines.dispose()
                raise
            self._engines = engines
            self._writer = GroupCommit(transact=engines.writer(), coalesce=engines.coalesce)
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
            async with engines.reading() as conn:
                return await read(conn)

        return await mapped(run())

    async def _writes(self) -> Lanes:
        await self._ready()
        assert self._lanes is not None
        return self._lanes

    def progress_feed(self, source: Source[RunProgress, bool]) -> Poke:
        """The run service's progress joins this store's group commit (one writer task)."""
        assert self._writer is not None, f"{self!r} is not started"
        publishing = Publishing(source, self._notifications)
        return self._writer.feed(progress.save_run_progress, publishing)


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


async def mapped(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``, turning outage errors into ``StoreUnavailableError``."""
    try:
        return await awaitable
    except Exception as error:
        outage = unavailable(error)
        if outage is None or outage is error:
            raise
        raise outage from error
