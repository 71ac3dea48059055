"""A real, throwaway PostgreSQL server for the test session (a pytest plugin).

Fixtures:

* ``postgres_server`` (session): a :class:`PostgresServer` started from the
  PostgreSQL binaries (``$PG_BINDIR``, else ``pg_config --bindir``, else
  ``/usr/lib/postgresql/*/bin``), with its data and socket in a temporary
  directory and a free TCP port on 127.0.0.1. Durability is switched off for
  speed. ``create_database()`` returns the URL of a fresh database (a copy of a
  template already migrated to head, or empty with ``migrated=False``);
  ``stop()`` / ``start()`` restart the server keeping its data, for tests of
  outages. Missing binaries fail the tests that need the server, loudly.
* ``postgres_url`` (function): ``postgres_server.create_database()``, dropped
  after the test. Each database is some 300 files (8 MB): kept until the end,
  a whole session's worth took longer to delete than most test files run.
"""

from __future__ import annotations

import asyncio
import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import asyncpg  # type: ignore[import-untyped]
import pytest

from llama_workflows_asgi.store import migrate

T = TypeVar("T")

_TEMPLATE = "workflow_template"
_SPEED_OVER_SAFETY = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def find_bindir() -> Path | None:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` live, if they are installed."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    if shutil.which("pg_config"):
        result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(result.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in filter(None, candidates):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    return None


def run_in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a private event loop (works inside async tests)."""
    box: dict[str, T | BaseException] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(_as_coroutine(make))
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


async def _as_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, run as the ``postgres`` user if root."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable  # keep fsync and synchronous commits (benchmarks)
        self.root = Path(tempfile.mkdtemp(prefix="llama-wf-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.host = "127.0.0.1"
        self._names = itertools.count(1)
        self._as_postgres = os.geteuid() == 0
        self.running = False
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")  # initdb refuses to run as root
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    # -- lifecycle -----------------------------------------------------------------

    def init(self) -> None:
        """Create the cluster (UTF-8, C locale, trust authentication)."""
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        """Start (or restart after :meth:`stop`) the server; return once it accepts connections."""
        options = [f"-p {self.port}", f"-k {self.root}", f"-c listen_addresses={self.host}"]
        if not self.durable:
            options += [f"-c {setting}" for setting in _SPEED_OVER_SAFETY]
        options += ["-c max_connections=300"]
        log = self.root / "postgres.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-w", "-t", "60",
                  "-o", " ".join(options), "start")  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast shutdown: open connections are cut); data is kept."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    def destroy(self) -> None:
        """Stop the server and delete its files."""
        try:
            self.stop("immediate")  # no shutdown checkpoint: the files are deleted next
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- databases -----------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """The ``postgresql+asyncpg://`` URL of ``dbname`` on this server."""
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{dbname}"

    def create_database(self, *, migrated: bool = True) -> str:
        """A fresh database's URL: migrated to head (a template copy) or empty."""
        if not self.running:  # a previous test stopped it and failed before restarting
            self.start()
        name = f"test_{os.getpid()}_{next(self._names)}"
        template = _TEMPLATE if migrated else "template0"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database :meth:`create_database` made, cutting any session left on it."""
        name = url.rsplit("/", 1)[1]
        if self.running:
            self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run one SQL statement outside any transaction (e.g. CREATE DATABASE)."""

        async def go() -> None:
            conn = await asyncpg.connect(host=self.host, port=self.port, user="postgres",
                                         database=dbname)  # fmt: skip
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        run_in_thread(go)

    def prepare_template(self) -> None:
        """Create the template database that :meth:`create_database` copies, migrated to head."""
        self.execute(f'CREATE DATABASE "{_TEMPLATE}"')
        run_in_thread(lambda: _upgrade(self.url(_TEMPLATE)))

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self._as_postgres:
            command = [_runuser(), "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if result.returncode != 0:
            log = self.root / "postgres.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed:\n{result.stdout}{result.stderr}\n{tail}")


async def _upgrade(url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


def _runuser() -> str:
    """``runuser``, which lives in an sbin directory a minimal PATH may lack."""
    for candidate in (shutil.which("runuser"), "/usr/sbin/runuser", "/sbin/runuser"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError("runuser not found: it is needed to run PostgreSQL as 'postgres' when root")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def launch_postgres() -> PostgresServer:
    """Start a throwaway server with its migrated template; fails the test if impossible."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in $PG_BINDIR, "
            "`pg_config --bindir` or /usr/lib/postgresql/*/bin: install PostgreSQL 15 "
            "(e.g. apt-get install postgresql-15) to run the PostgreSQL tests.",
            pytrace=False,
        )
    server = PostgresServer(bindir)
    atexit.register(server.destroy)  # even if the session is interrupted
    server.init()
    server.start()
    server.prepare_template()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server shared by the whole session; see the module docstring."""
    server = launch_postgres()
    yield server
    server.destroy()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh database, migrated to head, on the session's server; dropped after."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
