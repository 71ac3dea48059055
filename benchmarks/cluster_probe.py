"""The cluster under measurement: N replica processes on one PostgreSQL, and their counters.

Two views of the same statements:

* each replica's own count (``benchmarks.cluster_app``: an SQLAlchemy cursor
  hook; an ``executemany`` is one statement), which splits the cost by replica;
* the server's (``pg_stat_statements`` of the benchmark's database: every
  execution, whoever sent it, ``BEGIN`` / ``COMMIT`` included), plus the WAL
  written (``pg_current_wal_lsn``) and the CPU time of every PostgreSQL process.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

from benchmarks.cluster_app import WRITES, classify
from benchmarks.run import Server
from tests.support.postgres import PostgresServer

APP = "benchmarks.cluster_app:create_app"
SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.max": "20000",  # multi-row inserts of every size are distinct entries
    "pg_stat_statements.track_utility": "on",
}
"""What ``durable_postgres`` must configure for :class:`ServerStats`."""


@dataclass
class Sample:
    """Counts since the last reset: one ``Counter`` per replica and the server's."""

    replicas: list[Counter[str]]
    server: Counter[str]
    seconds: float
    poll_interval: float
    top: list[dict[str, Any]] = field(default_factory=list)

    def only(self, index: int) -> Sample:
        """The same sample with replica ``index``'s counts alone on the client side."""
        return Sample([self.replicas[index]], self.server, self.seconds, self.poll_interval)

    @property
    def rounds(self) -> float:
        """Ownership rounds of these replicas: renewal statements, else ``seconds / poll``."""
        counted = self.client()["rounds"]
        return counted or self.seconds / self.poll_interval * len(self.replicas)

    def client(self) -> Counter[str]:
        """The replicas' counts added up."""
        total: Counter[str] = Counter()
        for counts in self.replicas:
            total.update(counts)
        return total


@dataclass
class ServerStats:
    """``pg_stat_statements``, WAL position and CPU time of one PostgreSQL server."""

    pg: PostgresServer
    conn: Any = None
    lsn: int = 0
    top: list[dict[str, Any]] = field(default_factory=list)
    """The most executed statements at the last :meth:`counts`."""
    cpu: float = 0.0
    since: float = field(default_factory=time.monotonic)

    async def open(self) -> None:
        self.conn = await asyncpg.connect(
            host=self.pg.host, port=self.pg.port, user="postgres", database="postgres"
        )
        await self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def reset(self) -> None:
        await self.conn.execute("SELECT pg_stat_statements_reset()")
        self.lsn = int(await self.conn.fetchval("SELECT pg_current_wal_lsn()"))
        self.cpu, self.since = postgres_cpu_seconds(self.pg), time.monotonic()

    async def counts(self, dbname: str) -> Counter[str]:
        rows = await self.conn.fetch(
            "SELECT s.query, s.calls, s.rows FROM pg_stat_statements s"
            " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
            dbname,
        )
        counts: Counter[str] = Counter()
        self.top = [
            {"calls": calls, "rows": affected, "query": " ".join(query.split())[:160]}
            for query, calls, affected in sorted(rows, key=lambda row: -row[1])[:12]
        ]
        for query, calls, affected in rows:
            kind = classify(query)
            counts["executions"] += calls
            counts[f"x.{kind}"] += calls
            counts["commits"] += calls if query.lstrip().upper().startswith("COMMIT") else 0
            counts["rows_written"] += affected if kind in WRITES else 0
        lsn = int(await self.conn.fetchval("SELECT pg_current_wal_lsn()"))  # asyncpg: an int
        counts["wal_bytes"] = lsn - self.lsn
        counts["pg_cpu_ms"] = round((postgres_cpu_seconds(self.pg) - self.cpu) * 1000)
        return counts

    async def connections(self, dbname: str) -> int:
        """Connections open to ``dbname`` right now (pools keep theirs between uses)."""
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
        return int(await self.conn.fetchval(query, dbname))


def postgres_cpu_seconds(pg: PostgresServer) -> float:
    """User + system CPU of the postmaster and its children (backends, WAL writer, ...)."""
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[1]) == postmaster or stat.parent.name == str(postmaster):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Cluster:
    """``size`` replicas of ``benchmarks.cluster_app`` on a fresh database."""

    def __init__(self, pg: PostgresServer, stats: ServerStats, size: int, **env: str) -> None:
        self.url = pg.create_database()
        self.dbname = self.url.rsplit("/", 1)[1]
        self.stats = stats
        self.poll_interval = float(env.get("BENCH_POLL_INTERVAL", "1.0"))
        self.replicas = [Server("postgres", self.url, app=APP, env=dict(env)) for _ in range(size)]
        self.http = [httpx.AsyncClient(base_url=r.url, timeout=120) for r in self.replicas]

    async def __aenter__(self) -> Cluster:
        await asyncio.gather(*(r.ready() for r in self.replicas))
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.gather(*(client.aclose() for client in self.http))
        for replica in self.replicas:
            replica.process.kill()  # the database is thrown away: no graceful stop to wait for
            replica.process.wait()

    async def reset(self) -> None:
        await asyncio.gather(*(c.post("/_bench/statements/reset") for c in self.http))
        await self.stats.reset()

    async def _replica_state(self) -> list[dict[str, Any]]:
        answers = await asyncio.gather(*(c.get("/_bench/statements") for c in self.http))
        return [answer.json() for answer in answers]

    async def sample(self) -> Sample:
        states = await self._replica_state()
        server = await self.stats.counts(self.dbname)
        replicas = [Counter(state["counts"]) for state in states]
        seconds = max(counts.pop("seconds") for counts in replicas)
        return Sample(replicas, server, seconds, self.poll_interval, self.stats.top)

    async def gauge(self, name: str) -> int:
        """A gauge of ``benchmarks.cluster_app`` added up over the replicas."""
        return sum(int(state["gauges"].get(name, 0)) for state in await self._replica_state())

    async def settle(self, key: str = "rows.runs", quiet: float | None = None) -> None:
        """Wait until the replicas' ``key`` count stops moving for ``quiet`` seconds."""
        quiet = 2 * self.poll_interval if quiet is None else quiet
        last, still_since = -1.0, time.monotonic()
        while time.monotonic() - still_since < quiet:
            await asyncio.sleep(0.1)
            now = sum(float(s["counts"].get(key, 0)) for s in await self._replica_state())
            if now != last:
                last, still_since = now, time.monotonic()
