"""Throughput of this package (memory, SQLite, PostgreSQL) against the reference server.

    python -m benchmarks.run [--duration 10] [--clients 16] [--targets ...] [--workloads ...]

Each (server, workload) pair gets a fresh uvicorn process on loopback and a
fresh database; a closed loop of ``--clients`` concurrent HTTP clients calls
``POST /workflows/{workload}/run`` for ``--duration`` seconds after a warm-up.
The ``stream`` workload instead has one SSE client read a run's 1,000 events
live, ``--stream-runs`` times. Prints a table, the target ratios, and writes
``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from benchmarks.loadgen import Connection, Response
from benchmarks.postgres import durable_postgres
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["memory", "sqlite", "postgres", "reference"]
WORKLOADS = ["echo", "chain", "fanout", "stream"]
BODIES = {
    "echo": {"start_event": {"text": "hi"}},
    "chain": {"start_event": {}},
    "fanout": {"start_event": {}},
}
EXPECTED = {"echo": "hi", "chain": 20, "fanout": 90}


@dataclass
class Result:
    target: str
    workload: str
    runs: int = 0
    errors: int = 0
    runs_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    events_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    # Server CPU (user + system) per completed run, warm-up included: unlike
    # throughput, it barely moves when other work shares the machine.
    cpu_ms_per_run: float = 0.0
    completed: int = 0


class Server:
    """One benchmarked server process."""

    def __init__(self, target: str, database: str, code: str | None = None) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "BENCH_TARGET": target,
            "BENCH_DATABASE": database,
            # ``code``: another checkout's package shadows the installed one.
            "PYTHONPATH": os.pathsep.join(filter(None, [code, str(ROOT)])),
        }
        command = [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.apps:create_app"]
        command += ["--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        self.process = subprocess.Popen(command, env=env, cwd=ROOT)
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self) -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                try:
                    if (await client.get(self.url + "/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        raise RuntimeError("server did not start")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        return int(line.split()[1]) / 1024

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def closed_loop(
    url: str, workload: str, clients: int, duration: float, warmup: float
) -> Result:
    result = Result("", workload)
    latencies: list[float] = []
    host, port = url.removeprefix("http://").split(":")
    connections = [Connection(host, int(port)) for _ in range(clients)]
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration

    async def client_loop(connection: Connection) -> None:
        while (now := time.perf_counter()) < stop_at:
            response = await connection.request(
                "POST", f"/workflows/{workload}/run", BODIES[workload]
            )
            done = time.perf_counter()
            ok = response.status == 200 and _result(response) == EXPECTED[workload]
            result.completed += 1
            if now >= measure_from:
                latencies.append(done - now)
                result.errors += not ok

    try:
        await asyncio.gather(*(client_loop(c) for c in connections))
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    result.runs = len(latencies)
    result.runs_per_s = result.runs / duration
    result.p50_ms = statistics.median(latencies) * 1000
    result.p99_ms = statistics.quantiles(latencies, n=100)[98] * 1000
    return result


def _result(response: Response) -> object:
    value = response.json()["result"]["value"]
    return value.get("result")


async def stream_events(url: str, runs: int, count: int = 1000) -> Result:
    result = Result("", "stream")
    rates: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for i in range(runs + 2):
            started = time.perf_counter()
            handler = (
                await http.post(
                    "/workflows/stream/run-nowait", json={"start_event": {"count": count}}
                )
            ).json()
            frames = 0
            params = {"after_sequence": "-1"}
            async with http.stream(
                "GET", f"/events/{handler['handler_id']}", params=params
            ) as response:
                async for chunk in response.aiter_bytes():
                    frames += chunk.count(b"\ndata: ")
            elapsed = time.perf_counter() - started
            if i >= 2:  # the first two warm up
                rates.append((count + 1) / elapsed)
                result.errors += frames != count + 1
            result.runs += 1
    result.events_per_s = statistics.median(rates)
    return result


async def measure(target: str, workload: str, args: argparse.Namespace, database: str) -> Result:
    server = Server(target, database, args.code)
    try:
        await server.ready()
        cpu = server.cpu_seconds()
        if workload == "stream":
            result = await stream_events(server.url, args.stream_runs)
        else:
            result = await closed_loop(
                server.url, workload, args.clients, args.duration, args.warmup
            )
            result.cpu_ms_per_run = (server.cpu_seconds() - cpu) * 1000 / max(result.completed, 1)
        result.peak_rss_mb = server.peak_rss_mb()
    finally:
        server.stop()
    result.target = target
    return result


_COLUMNS = (("server", 10), ("workload", 8), ("runs/s", 9), ("p50 ms", 8), ("p99 ms", 8))
_COLUMNS += (("events/s", 10), ("peak MB", 8), ("errors", 6), ("cpu ms/run", 10))


def print_table(results: list[Result]) -> None:
    header = " ".join(
        name.rjust(width) if i > 1 else name.ljust(width)
        for i, (name, width) in enumerate(_COLUMNS)
    )
    print(header)
    print("-" * len(header))
    for r in results:
        streaming = r.workload == "stream"
        cells = [
            r.target,
            r.workload,
            "-" if streaming else f"{r.runs_per_s:,.1f}",
            "-" if streaming else f"{r.p50_ms:.1f}",
            "-" if streaming else f"{r.p99_ms:.1f}",
            f"{r.events_per_s:,.0f}" if streaming else "-",
            f"{r.peak_rss_mb:.0f}",
            str(r.errors),
            "-" if streaming else f"{r.cpu_ms_per_run:.2f}",
        ]
        print(
            " ".join(
                c.rjust(w) if i > 1 else c.ljust(w)
                for i, (c, (_, w)) in enumerate(zip(cells, _COLUMNS, strict=True))
            )
        )


def ratios(results: list[Result]) -> list[tuple[str, float, float]]:
    """(check, measured ratio, target) for every comparison the brief sets."""
    by = {(r.target, r.workload): r for r in results}
    checks: list[tuple[str, float, float]] = []
    for workload in ("echo", "chain"):
        memory = by.get(("memory", workload))
        for target, floor in (("sqlite", 0.5), ("postgres", 0.4)):
            durable = by.get((target, workload))
            if memory and durable:
                checks.append(
                    (f"{target}/memory {workload}", durable.runs_per_s / memory.runs_per_s, floor)
                )
        reference, sqlite = by.get(("reference", workload)), by.get(("sqlite", workload))
        if reference and sqlite and reference.runs_per_s:
            checks.append(
                (f"sqlite/reference {workload}", sqlite.runs_per_s / reference.runs_per_s, 5.0)
            )
    return checks


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--stream-runs", type=int, default=20)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument(
        "--code", help="benchmark the package of another checkout (e.g. a git worktree) instead"
    )
    args = parser.parse_args()
    targets, workloads = args.targets.split(","), args.workloads.split(",")

    results: list[Result] = []
    with (
        tempfile.TemporaryDirectory() as scratch,
        durable_postgres(enabled="postgres" in targets) as pg,
    ):
        for target in targets:
            for workload in workloads:
                database = (
                    pg.create_database()
                    if target == "postgres"
                    else f"{scratch}/{target}-{workload}.db"
                )
                results.append(await measure(target, workload, args, database))
                print_table(results[-1:])
    print()
    print_table(results)
    print()
    for name, value, floor in ratios(results):
        verdict = "ok" if value >= floor else "BELOW TARGET"
        print(f"{name:<28} {value:6.2f}x  (target >= {floor}x)  {verdict}")
    stream = next((r for r in results if r.target != "reference" and r.workload == "stream"), None)
    if stream:
        print(f"{'one SSE client':<28} {stream.events_per_s:,.0f} events/s  (target >= 20,000)")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    machine = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    payload = {"machine": machine, "args": vars(args), "results": [asdict(r) for r in results]}
    (out / "latest.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
