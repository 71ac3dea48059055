"""Many SSE streams on runs released while they wait: the server's cost while nothing happens.

    python -m benchmarks.idle_streams [--streams 300] [--window 10] [--target postgres|sqlite]

One uvicorn process of the test app (``tests.support.crash_app``) with
``idle_timeout`` 1 s starts ``--streams`` ``hitl`` runs, which ask a
question and are released from memory a second later. Then, for a window
without and a window with one SSE stream open on each of them, it reports the
server process's CPU (from ``/proc``), the SQL statements it sends per
second (all, and those reading the event log) and the latency of unrelated
requests (``GET /handlers/{id}``, ten a second). At the end every stream is
answered and must end at its final event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx

from benchmarks.postgres import durable_postgres
from tests.support.cross_replica import ANSWER, percentile
from tests.support.http import FrameReader, start
from tests.support.processes import ServerProcess, server_processes

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Window:
    cpu: float  # share of one core
    statements: float  # per second
    event_reads: float  # statements reading the event log, per second
    latency_p50: float  # ms
    latency_max: float  # ms


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


async def counts(http: httpx.AsyncClient) -> dict[str, int]:
    answer: dict[str, int] = (await http.get("/__counts")).json()
    return answer


async def window(server: ServerProcess, probe_id: str, seconds: float) -> Window:
    assert server.process is not None
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        before_cpu, before = cpu_seconds(server.process.pid), await counts(http)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            sent = time.perf_counter()
            assert (await http.get(f"/handlers/{probe_id}")).status_code == 202
            latencies.append((time.perf_counter() - sent) * 1000)
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
        cpu = (cpu_seconds(server.process.pid) - before_cpu) / elapsed
        after = await counts(http)
    statements = (after["all"] - before["all"]) / elapsed
    event_reads = (after["events"] - before["events"]) / elapsed
    return Window(cpu, statements, event_reads, percentile(latencies, 0.5), max(latencies))


async def released(database: str, dsn: str | None, count: int) -> None:
    """Wait until ``count`` runs are running and owned by nobody (released while waiting)."""
    query = "SELECT count(*) FROM workflow_handlers WHERE status = 'running' AND owner_id IS NULL"
    for _ in range(600):
        if dsn is not None:
            conn = await asyncpg.connect(dsn)
            try:
                found = await conn.fetchval(query)
            finally:
                await conn.close()
        else:
            with sqlite3.connect(database) as db:
                found = db.execute(query).fetchone()[0]
        if found >= count:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"only {found} of {count} runs were released")


async def follow(url: str, handler_id: str, opened: asyncio.Event, go: asyncio.Event) -> None:
    async with (
        httpx.AsyncClient(base_url=url, timeout=None) as http,
        http.stream("GET", f"/events/{handler_id}", params={"after_sequence": "-1"}) as response,
    ):
        reader = FrameReader(response)
        await reader.until_event("AskEvent", timeout=300)
        opened.set()
        await go.wait()
        await reader.until_event("StopEvent", timeout=300)


async def measure(url: str, database: str, dsn: str | None, args: argparse.Namespace) -> None:
    env = {
        "WF_DATABASE_URL": url,
        "WF_IDLE_TIMEOUT": "1",
        "WF_STREAM_POLL_INTERVAL": "0.5",
        "WF_SSE_HEARTBEAT": "25",
        "WF_COUNT_STATEMENTS": "1",
    }
    log_dir = os.environ.get("BENCH_LOG_DIR") or tempfile.mkdtemp()
    with server_processes(ServerProcess("server", env, Path(log_dir))) as (server,):
        await asyncio.to_thread(server.start)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            ids = [await start(http, "hitl") for _ in range(args.streams + 1)]
        probe, streamed = ids[0], ids[1:]
        await released(database, dsn, len(ids))
        quiet = await window(server, probe, args.window)
        go = asyncio.Event()
        opened = [asyncio.Event() for _ in streamed]
        tasks = [
            asyncio.ensure_future(follow(server.url, hid, ev, go))
            for hid, ev in zip(streamed, opened, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in opened)), 300)
        busy = await window(server, probe, args.window)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            go.set()
            for hid in streamed:
                assert (await http.post(f"/events/{hid}", json=ANSWER)).status_code == 200
        await asyncio.wait_for(asyncio.gather(*tasks), 300)
    report(args, quiet, busy)


def report(args: argparse.Namespace, quiet: Window, busy: Window) -> None:
    print(f"{args.target}, runs released after idle_timeout, {args.window:.0f} s windows:")
    for name, w in (("no streams", quiet), (f"{args.streams} streams", busy)):
        print(
            f"  {name:>12}: CPU {w.cpu * 100:.1f}% of a core, {w.statements:.1f} statements/s "
            f"({w.event_reads:.1f}/s read the event log), "
            f"unrelated GET p50 {w.latency_p50:.1f} ms, max {w.latency_max:.1f} ms"
        )
    print("  every stream ended at its final event after the answers")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--target", choices=["postgres", "sqlite"], default="postgres")
    args = parser.parse_args()
    with (
        durable_postgres(enabled=args.target == "postgres") as pg,
        tempfile.TemporaryDirectory() as tmp,
    ):
        if args.target == "postgres":
            url = pg.create_database()
            dsn: str | None = url.replace("postgresql+asyncpg://", "postgresql://")
            database = ""
        else:
            database, dsn = str(Path(tmp) / "handlers.db"), None
            url = f"sqlite+aiosqlite:///{database}"
        await measure(url, database, dsn, args)


if __name__ == "__main__":
    asyncio.run(main())
