"""SQLite's write transactions, run in the event loop's thread while nothing there would wait.

A batch's body is the group commit's ordinary coroutine over a connection; it
is given :class:`_Synchronous`, whose methods never suspend, so one ``send``
runs it to the end: SQLAlchemy's synchronous pysqlite dialect drives the very
``sqlite3`` connection aiosqlite opened (same pragmas, same ``BEGIN
IMMEDIATE``, same single write connection), and commits before the writer hears
back, so nothing is acknowledged before it is committed.

**Where it runs.** A hand-off to aiosqlite's thread costs more than a small
batch's own work (the thread's wakeup, the GIL taken back from a busy loop, the
result posted back): with its batches in the loop's thread, a durable SQLite
echo run costs about a tenth less CPU (``docs/benchmarks.md``, ninth round).
The price: SQLite's own work on a batch, which the driver's thread did while
the loop ran on (the driver lets go of the GIL inside each statement), now
holds the loop, about 4.5 ms for 1,000 events. So a batch runs in the loop's
thread, and what would make the loop wait on the file goes to the driver's
thread, in the one hand-off every batch used to take:

- **The write lock.** ``BEGIN IMMEDIATE`` is tried with a busy timeout of zero.
  When another connection holds the lock (another process writing the same
  file: in this one, the pool's one write connection is the writer's while a
  batch runs), the batch goes to the driver's thread, where it waits up to the
  store's busy timeout, as every batch did before.
- **The WAL checkpoint.** SQLite runs one inside a commit once the log holds
  1,000 pages, writing them back into the database file and syncing it, and
  the first commit after a complete checkpoint starts the log over and syncs
  it. The loop's commits run with the connection's autocheckpoint off (set
  back after each, for the connection's other users), and once a checkpoint is
  due (:class:`_Checkpoints`: about 1,000 pages written since the last, by a
  count of commits learned from each checkpoint, or by the log file's growth)
  the next batch goes to the driver's thread, which checkpoints (``PASSIVE``,
  as SQLite's own) and then runs it. A checkpoint that fails is logged, and
  the batch goes on. (A log started over after a checkpoint by another
  process, or left by readers to a later commit, still syncs in the loop.)

A connection outside WAL mode (where a commit takes the file's exclusive lock
and syncs it) or bound to its own thread (``check_same_thread``, as a private
memory database's) runs every batch in the driver's thread.

Statements and commits are announced as events of the store's write engine, as
before, for the host's instrumentation (and the tests'), except the loop's
``BEGIN IMMEDIATE``, sent to the driver directly so that a lock found taken
leaves no transaction behind in SQLAlchemy.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, CursorResult, Engine, NestedTransaction
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import Executable

Body = Callable[[AsyncConnection], Awaitable[None]]

LOOP_COALESCE = 2.0
"""The group commit's ``coalesce`` over these writes: a feed waits twice as long as its
write took before its next pull. The write held the loop all that time (where a write
in another thread did not), so the writer keeps to about a third of the loop's time
and a batch still gathers several steps of each busy run (measured: ninth round)."""

_FORWARDED = ("before_cursor_execute", "after_cursor_execute", "commit", "rollback")
_MAX_COMMITS_PER_CHECKPOINT = 1000

logger = logging.getLogger(__name__)


def in_loop(write: AsyncEngine, begin: str) -> Callable[[Body], Awaitable[None]]:
    """A ``Transact`` for ``write`` (aiosqlite): each batch in the loop's thread when
    nothing there would wait, else in the driver's thread (see the module docstring)."""

    async def transact(body: Body) -> None:
        async with write.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection  # the aiosqlite.Connection
            assert driver is not None
            try:
                writer = await _writer_for(driver, write, begin)
                due = writer.checkpoint_due()
                if due or writer.in_thread or not (writer.here and writer.run_now(body)):
                    await writer.run_in_thread(driver, body, checkpoint=due)
            except BaseException:
                # The error went by the async pool, which would hand this
                # connection out again even if the driver closed it (or, cancelled,
                # while its thread is still at work): drop it.
                await conn.invalidate()
                raise
            if writer.broken:  # committed, but its settings could not be put back
                _WRITERS.pop(driver, None)
                try:
                    await conn.invalidate()
                except Exception:  # the batch is committed: it is acknowledged all the same
                    logger.warning("dropping the SQLite write connection failed", exc_info=True)

    return transact


@dataclass
class _Checkpoints:
    """When the loop's commits, which never checkpoint, call for a checkpoint."""

    target: int
    """Pages between two checkpoints: the connection's autocheckpoint (SQLite's 1,000)."""
    page_size: int
    every: int = 1
    """Commits between two checkpoints: one at first, then learned from each."""
    since: int = 1
    """Commits since the last checkpoint: the first batch checkpoints (and starts the log)."""
    log_size: int = 0
    """The log file's size at the last checkpoint."""

    def due(self, log_size: int) -> bool:
        """Whether the next batch checkpoints first, the log file being ``log_size`` bytes.

        The file never shrinks (a checkpointed log is written over from its
        start), so its growth only counts the pages written past its largest size.
        """
        grown = self.target > 0 and log_size - self.log_size >= self.target * self.page_size
        return self.since >= self.every or grown

    def committed(self) -> None:
        """Count a commit since the last checkpoint."""
        self.since += 1

    def checkpointed(self, pages: int | None, log_size: int) -> None:
        """The log held ``pages`` when checkpointed (None: it could not be).

        The next one is spaced to fill ``target`` at the last cycle's pages per
        commit. A log that readers kept from starting over also holds older
        pages, which only brings the next checkpoint sooner; a checkpoint that
        failed, or found nothing, teaches nothing and is tried again as late.
        """
        if pages is not None and pages > 0:
            per_commit = pages / max(self.since, 1)
            every = int(max(self.target, 1) / per_commit)
            self.every = max(1, min(_MAX_COMMITS_PER_CHECKPOINT, every))
        self.since = 0
        self.log_size = log_size


@dataclass
class _Writer:
    """One write connection: its synchronous engine, its settings, its checkpoints."""

    connection: sqlite3.Connection
    engine: Engine
    begin: str
    busy_timeout_ms: int
    here: bool
    """Whether batches may run in the loop's thread (WAL, and not bound to its own thread)."""
    log_path: str | None
    checkpoints: _Checkpoints
    """When a checkpoint is due; its ``target`` is the connection's own autocheckpoint."""
    in_thread: bool = False
    """The driver's thread is at work on this connection (a cancelled wait leaves it so)."""
    locked: bool = False
    """The loop's batch has sent its ``BEGIN IMMEDIATE`` (SQLAlchemy's ``begin`` sends none)."""
    broken: bool = False
    """A commit here could not put the connection's settings back: drop the connection."""

    def checkpoint_due(self) -> bool:
        """Whether the next batch checkpoints first (in the driver's thread)."""
        return self.here and self.checkpoints.due(self._log_size())

    def run_now(self, body: Body) -> bool:
        """Run ``body`` and commit, in this thread, if the write lock is free now.

        Returns False, having sent nothing but the attempt to take the lock,
        when another connection holds it.
        """
        if not self._lock_now():
            return False
        self.locked = True
        conn = self.engine.connect()
        committed = False
        try:
            self._set("wal_autocheckpoint", 0)
            trans = conn.begin()  # the lock is held already: the listener sends nothing
            try:
                _drive(body, conn)
            except BaseException:
                trans.rollback()
                raise
            trans.commit()
            committed = True
        finally:
            self._after(conn, committed)
        self.checkpoints.committed()
        return True

    async def run_in_thread(self, driver: Any, body: Body, *, checkpoint: bool) -> None:
        """Run the batch in the driver's thread, a checkpoint first if ``checkpoint``."""
        self.in_thread = True
        pages = await driver._execute(_in_thread, self, body, checkpoint)
        if checkpoint:
            self.checkpoints.checkpointed(pages, self._log_size())
        self.checkpoints.committed()

    def _lock_now(self) -> bool:
        """``BEGIN IMMEDIATE`` if the write lock is free now; False if another holds it."""
        self._set("busy_timeout", 0)
        try:
            self.connection.execute(self.begin)
        except sqlite3.OperationalError as error:
            if not _is_busy(error):
                raise
            return False
        finally:
            # The body waits as any statement does, should SQLite ever ask it to.
            self._set("busy_timeout", self.busy_timeout_ms)
        return True

    def _after(self, conn: Connection, committed: bool) -> None:
        """Put the autocheckpoint back and the connection away; never fail a commit made."""
        self.locked = False
        try:
            self._set("wal_autocheckpoint", self.checkpoints.target)
            conn.close()
        except Exception:
            if not committed:
                raise
            logger.warning("restoring the SQLite write connection failed", exc_info=True)
            self.broken = True

    def _set(self, pragma: str, value: int) -> None:
        self.connection.execute(f"PRAGMA {pragma} = {int(value)}")

    def _log_size(self) -> int:
        if self.log_path is None:
            return 0
        try:
            return os.stat(self.log_path).st_size
        except OSError:
            return 0


def _is_busy(error: sqlite3.OperationalError) -> bool:
    # SQLITE_BUSY, all its extended codes included, reads so (its sqlite3_errmsg;
    # ``sqlite_errorcode`` is Python 3.11's).
    return str(error) == "database is locked"


def _in_thread(writer: _Writer, body: Body, checkpoint: bool) -> int | None:
    """In the driver's thread: a checkpoint first if asked (the pages the log held), then
    the batch, in one transaction committed on success (waiting for the lock)."""
    try:
        pages = _checkpoint(writer.connection) if checkpoint else None
        with writer.engine.begin() as conn:
            _drive(body, conn)
        return pages
    finally:
        writer.in_thread = False


def _checkpoint(connection: sqlite3.Connection) -> int | None:
    try:
        busy, pages, _copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error:
        logger.warning("checkpointing the SQLite write-ahead log failed", exc_info=True)
        return None
    return None if busy else int(pages)


# One writer per driver connection (the write engine holds one).
_WRITERS: weakref.WeakKeyDictionary[Any, _Writer] = weakref.WeakKeyDictionary()


async def _writer_for(driver: Any, write: AsyncEngine, begin: str) -> _Writer:
    writer = _WRITERS.get(driver)
    if writer is None:
        connection: sqlite3.Connection = driver._conn
        engine = create_engine("sqlite://", creator=lambda: connection, poolclass=StaticPool)
        # Read here, the connection checked out and its thread idle, when it may be used here.
        try:
            settings, bound = _settings(connection), False
        except sqlite3.ProgrammingError:  # bound to its own thread
            settings, bound = await driver._execute(_settings, connection), True
        busy, autocheckpoint, journal, page_size, path = settings
        wal = journal == "wal"
        writer = _Writer(
            connection,
            engine,
            begin,
            busy,
            here=wal and not bound,
            log_path=f"{path}-wal" if wal and path else None,
            checkpoints=_Checkpoints(autocheckpoint, page_size),
        )
        _listen(engine, write, writer)
        _WRITERS[driver] = writer
    return writer


def _listen(engine: Engine, write: AsyncEngine, writer: _Writer) -> None:
    """``begin`` sent for every transaction but the loop's batch (which sent its own), and
    statements and commits announced as the write engine's."""

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if not writer.locked:
            conn.exec_driver_sql(writer.begin)

    for name in _FORWARDED:
        event.listen(engine, name, _forward(write.sync_engine, name))


def _settings(connection: sqlite3.Connection) -> tuple[int, int, str, int, str]:
    """The connection's busy timeout (ms), autocheckpoint (pages), journal mode, page size,
    and its database file's path."""

    def one(pragma: str) -> Any:
        return connection.execute(f"PRAGMA {pragma}").fetchone()[0]

    main = next(row for row in connection.execute("PRAGMA database_list") if row[1] == "main")
    busy, autocheckpoint = one("busy_timeout"), one("wal_autocheckpoint")
    return int(busy), int(autocheckpoint), str(one("journal_mode")), int(one("page_size")), main[2]


def _forward(target: Engine, name: str) -> Callable[..., None]:
    def forward(*args: Any) -> None:
        getattr(target.dispatch, name)(*args)

    return forward


def _drive(body: Body, conn: Connection) -> None:
    steps = body(cast(AsyncConnection, _Synchronous(conn))).__await__()
    try:
        next(steps)
    except StopIteration:
        return
    steps.close()
    raise RuntimeError("a batch function awaited something other than its connection")


class _Synchronous:
    """The part of ``AsyncConnection`` batch functions use, over a synchronous connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect

    async def execute(
        self,
        statement: Executable,
        parameters: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    ) -> CursorResult[Any]:
        return self._conn.execute(statement, parameters)

    async def exec_driver_sql(
        self, statement: str, parameters: Sequence[tuple[Any, ...]]
    ) -> CursorResult[Any]:
        return self._conn.exec_driver_sql(statement, parameters)

    async def scalar(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Any:
        return self._conn.scalar(statement, parameters)

    def begin_nested(self) -> _Savepoint:
        return _Savepoint(self._conn.begin_nested())


class _Savepoint:
    """``async with conn.begin_nested():`` over a synchronous savepoint."""

    def __init__(self, savepoint: NestedTransaction) -> None:
        self._savepoint = savepoint

    async def __aenter__(self) -> _Savepoint:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._savepoint.__exit__(kind, error, traceback)
