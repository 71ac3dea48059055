"""A throwaway PostgreSQL server for benchmarks, with the default (durable) settings."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from tests.support.postgres import PostgresServer, find_bindir


class _Disabled:
    def create_database(self) -> str:
        raise RuntimeError("PostgreSQL was not started for this benchmark")


@contextmanager
def durable_postgres(
    *, enabled: bool = True, settings: Mapping[str, str] | None = None
) -> Iterator[PostgresServer | _Disabled]:
    """Start PostgreSQL with fsync and synchronous commits on (unlike the test server).

    ``settings`` go to ``postgresql.conf`` before the first start (e.g.
    ``shared_preload_libraries``, which only a start reads).
    """
    if not enabled:
        yield _Disabled()
        return
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found (pg_config --bindir)")
    server = PostgresServer(bindir, durable=True)
    try:
        server.init()
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = '{value}'\n" for name, value in (settings or {}).items())
        server.start()
        server.prepare_template()
        yield server
    finally:
        server.destroy()
