"""Liveness tokens: proof, kept by the system itself, that a run owner is alive.

Each process holds one token per owner id it writes on handler rows. The token
is released by the operating system or the database when the process dies, so
another process can tell a dead owner from a live one without guessing from a
host name and pid (two containers may both be pid 1 on one host name):

* PostgreSQL (``_liveness_pg.PostgresLiveness``): a session-level advisory
  lock (key derived from the owner id) on a dedicated connection, outside the
  pool; others probe it with ``pg_try_advisory_lock`` and unlock at once if
  they got it. The server drops the lock when the session ends, crash or not.
* SQLite file: an ``flock`` on a file beside the database, one per owner; the
  kernel drops it with the process, across PID namespaces on one host.
* Memory store (or in-memory SQLite): a set in this process.

A token can be lost while the process lives (the dedicated connection breaks).
Others may then take the owner for dead and adopt its runs at once, so the
holder is told (``on_change(False)``) and must stop acting as an owner until the
token is held again (``on_change(True)``); see ``service.lifecycle``.

Only owner ids made for liveness (see :func:`proves_liveness`) are ever judged
dead: rows written by a process that holds no token wait for their lease.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from pathlib import Path
from typing import IO

LIVENESS_MARK = "L"
"""First character of the token part of owner ids whose liveness can be probed."""

OnChange = Callable[[bool], None]
"""Called with ``False`` when the token is lost and ``True`` once it is held again."""


def proves_liveness(owner_id: str) -> bool:
    """Whether ``owner_id`` was made by a process that holds a liveness token."""
    return owner_id.rpartition(":")[2].startswith(LIVENESS_MARK)


def owner_key(owner_id: str) -> int:
    """A signed 64-bit key for ``owner_id`` (a PostgreSQL advisory lock key)."""
    digest = hashlib.sha256(b"llama_workflows_asgi.owner:" + owner_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Liveness(ABC):
    """The liveness tokens of one store: hold ours, probe others'.

    ``held`` is whether every token acquired here is currently held;
    ``kind`` names the token, as the owners table records it.
    """

    held: bool = True
    kind: str | None = None

    def token_key(self, owner_id: str) -> int | None:
        """The database key of ``owner_id``'s token, if it has one (an advisory lock's)."""
        return None

    @abstractmethod
    async def acquire(self, owner_id: str, on_change: OnChange | None = None) -> None:
        """Take the token of ``owner_id`` (and keep it, re-taking it if it is lost).

        Raises ``StoreUnavailableError`` (or the driver's error) if it cannot be taken.
        """

    @abstractmethod
    async def probe(self, owner_ids: Collection[str]) -> set[str]:
        """The owners among ``owner_ids`` that are provably dead (their token is free)."""

    @abstractmethod
    async def release(self, owner_id: str | None = None) -> None:
        """Give up the token of ``owner_id`` (every token held here when ``None``)."""


class UnprovenLiveness(Liveness):
    """For stores that cannot prove anything: no owner is ever known dead (leases decide)."""

    async def acquire(self, owner_id: str, on_change: OnChange | None = None) -> None:
        return None

    async def probe(self, owner_ids: Collection[str]) -> set[str]:
        return set()

    async def release(self, owner_id: str | None = None) -> None:
        return None


class LocalLiveness(Liveness):
    """Tokens of a store only this process can see: an owner is alive while it holds one."""

    kind = "process"

    def __init__(self) -> None:
        self._held: set[str] = set()

    async def acquire(self, owner_id: str, on_change: OnChange | None = None) -> None:
        self._held.add(owner_id)

    async def probe(self, owner_ids: Collection[str]) -> set[str]:
        return {o for o in owner_ids if proves_liveness(o) and o not in self._held}

    async def release(self, owner_id: str | None = None) -> None:
        if owner_id is None:
            self._held.clear()
        else:
            self._held.discard(owner_id)


class FileLockLiveness(Liveness):
    """``flock`` files in ``<database>-owners/``, one per owner.

    A live owner keeps its file open and locked; the kernel releases the lock
    when the process dies. A missing file or a free lock means the owner is
    dead (it takes its lock before it writes any row); the prober then removes
    the file so files of crashed processes do not pile up.
    """

    kind = "flock"

    def __init__(self, database: str | os.PathLike[str]) -> None:
        path = Path(database).resolve()
        self.directory = path.with_name(path.name + "-owners")
        self._files: dict[str, IO[bytes]] = {}

    def _path(self, owner_id: str) -> Path:
        return self.directory / (hashlib.sha256(owner_id.encode()).hexdigest()[:32] + ".lock")

    async def acquire(self, owner_id: str, on_change: OnChange | None = None) -> None:
        if owner_id in self._files:
            return
        self._files[owner_id] = _locked_file(self._path(owner_id))

    async def probe(self, owner_ids: Collection[str]) -> set[str]:
        return {o for o in owner_ids if proves_liveness(o) and self._is_free(o)}

    def _is_free(self, owner_id: str) -> bool:
        if owner_id in self._files:
            return False
        path = self._path(owner_id)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return True
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            # Ours now: nobody holds it, so its owner is gone for good.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return True

    async def release(self, owner_id: str | None = None) -> None:
        owners = list(self._files) if owner_id is None else [owner_id]
        for owner in owners:
            handle = self._files.pop(owner, None)
            if handle is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                self._path(owner).unlink()  # while locked: no prober is misled
            handle.close()


def _locked_file(path: Path) -> IO[bytes]:
    """``path`` opened (created if missing) and locked; local file calls, they do not block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "ab")  # noqa: SIM115 - held until release
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        handle.close()
        raise
    return handle
