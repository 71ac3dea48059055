"""A throwaway PostgreSQL server for benchmarks, with the default (durable) settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.postgres import PostgresServer, find_bindir


class _Disabled:
    def create_database(self) -> str:
        raise RuntimeError("PostgreSQL was not started for this benchmark")


@contextmanager
def durable_postgres(*, enabled: bool = True) -> Iterator[PostgresServer | _Disabled]:
    """Start PostgreSQL with fsync and synchronous commits on (unlike the test server)."""
    if not enabled:
        yield _Disabled()
        return
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found (pg_config --bindir)")
    server = PostgresServer(bindir, durable=True)
    try:
        server.init()
        server.start()
        server.prepare_template()
        yield server
    finally:
        server.destroy()
