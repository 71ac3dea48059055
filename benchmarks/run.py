"""Throughput of this package (memory, SQLite, PostgreSQL) against a hand-written endpoint.

    python -m benchmarks.run [--duration 10] [--clients 16] [--targets ...] [--workloads ...]
                             [--rounds 1]

Each (server, workload) pair gets a fresh uvicorn process on loopback and a
fresh database; a closed loop of ``--clients`` concurrent HTTP clients calls
``POST /workflows/{workload}/run`` for ``--duration`` seconds after a warm-up.
The ``stream`` workload instead has one SSE client read a run's 1,000 events
live, ``--stream-runs`` times. ``handwritten`` is the anchor: a plain FastAPI
endpoint awaiting ``workflow.run()`` with no durability (it has no stream
route). Prints a table, every target's ratio to the anchor and the targets,
and writes ``benchmarks/results/latest.json``. A pair that completed no request
inside its window is reported as such, never as a figure.

With ``--rounds N`` every pair is measured N times, round after round,
workload by workload, the targets in reverse order every other round (so a
machine's drift weighs on all alike). A ratio is taken within its round,
against that round's anchor, and reported as the median of the rounds with
every round's value beside it: on a shared machine throughput moves between
minutes far more than the ratios do.
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

from benchmarks.checkout import ROOT, Checkout
from benchmarks.loadgen import Connection, Response
from benchmarks.postgres import durable_postgres
from tests.support.processes import free_port

TARGETS = ["handwritten", "memory", "sqlite", "postgres", "reference"]
ANCHOR = "handwritten"
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
    round: int = 0


class Server:
    """One benchmarked server process."""

    def __init__(
        self,
        target: str,
        database: str,
        code: str | None = None,
        *,
        app: str = "benchmarks.apps:create_app",
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        # ``code``: another checkout's package shadows this one (see ``checkout``).
        self._checkout = Checkout(code)
        given = {**(env or {}), "BENCH_TARGET": target, "BENCH_DATABASE": database}
        command = [sys.executable, "-m", "uvicorn", "--factory", app]
        command += ["--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        try:
            self.process = subprocess.Popen(**self._checkout.popen(command, given))
        except BaseException:
            self._checkout.close()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self) -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}")
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
        self._checkout.close()


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
    if len(latencies) >= 2:
        result.p50_ms = statistics.median(latencies) * 1000
        result.p99_ms = statistics.quantiles(latencies, n=100)[98] * 1000
    elif latencies:
        result.p50_ms = result.p99_ms = latencies[0] * 1000
    return result


def _result(response: Response) -> object:
    value = response.json()["result"]["value"]
    return value.get("result")


async def stream_events(url: str, runs: int, count: int = 1000) -> Result:
    result = Result("", "stream")
    rates: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for i in range(runs + 2):
            rate, complete = await stream_once(http, count)
            if i >= 2:  # the first two warm up
                rates.append(rate)
                result.errors += not complete
            result.runs += 1
    result.events_per_s = statistics.median(rates) if rates else 0.0
    return result


async def stream_once(http: httpx.AsyncClient, count: int = 1000) -> tuple[float, bool]:
    """One run of ``count`` events read live by one SSE client: events/s, and whether all came."""
    started = time.perf_counter()
    body = {"start_event": {"count": count}}
    handler = (await http.post("/workflows/stream/run-nowait", json=body)).json()
    frames = 0
    params = {"after_sequence": "-1"}
    async with http.stream("GET", f"/events/{handler['handler_id']}", params=params) as response:
        async for chunk in response.aiter_bytes():
            frames += chunk.count(b"\ndata: ")
    return (count + 1) / (time.perf_counter() - started), frames == count + 1


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


_COLUMNS: tuple[tuple[str, int], ...] = (("server", 12), ("workload", 8), ("runs/s", 9))
_COLUMNS += (("p50 ms", 8), ("p99 ms", 8))
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
        if not (r.events_per_s if streaming else r.runs):
            print(f"{r.target:<12} {r.workload:<8} no request completed in the window")
            continue
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


TARGET_RATIOS: dict[tuple[str, str], float] = {
    ("memory", "echo"): 0.9,
    ("memory", "chain"): 0.9,
    ("sqlite", "echo"): 0.7,
    ("sqlite", "chain"): 0.85,
    ("postgres", "echo"): 0.6,
}
"""Least throughput each target must reach, as a ratio to the hand-written endpoint."""

REFERENCE_FLOOR = 8.0
"""Least SQLite-to-reference throughput ratio on ``echo``."""


def ratios(results: list[Result]) -> list[tuple[str, float | None, float | None]]:
    """(comparison, measured ratio or ``None`` if not measurable, target or ``None``)."""
    by = {(r.target, r.workload): r for r in results}
    checks: list[tuple[str, float | None, float | None]] = []
    for (target, workload), r in by.items():
        anchor = by.get((ANCHOR, workload))
        if target == ANCHOR or anchor is None or workload == "stream":
            continue
        measured = r.runs_per_s / anchor.runs_per_s if anchor.runs and r.runs else None
        checks.append(
            (f"{target}/{ANCHOR} {workload}", measured, TARGET_RATIOS.get((target, workload)))
        )
    reference, sqlite = by.get(("reference", "echo")), by.get(("sqlite", "echo"))
    if reference and sqlite:
        measured = sqlite.runs_per_s / reference.runs_per_s if reference.runs else None
        checks.append(("sqlite/reference echo", measured, REFERENCE_FLOOR))
    return checks


def verdict(measured: float | None, floor: float | None) -> str:
    if measured is None:
        return "not measured (no request completed)"
    if floor is None:
        return ""
    return f"(target >= {floor}x)  " + ("ok" if measured >= floor else "BELOW TARGET")


def across_rounds(rounds: list[list[Result]]) -> list[tuple[str, list[float | None], float | None]]:
    """Each comparison of :func:`ratios`: its value in every round, and its floor."""
    values: dict[str, list[float | None]] = {}
    floors: dict[str, float | None] = {}
    for results in rounds:
        for name, measured, floor in ratios(results):
            values.setdefault(name, []).append(measured)
            floors[name] = floor
    return [(name, values[name], floors[name]) for name in values]


def median_of(values: list[float | None]) -> float | None:
    """The median of the measured values, ``None`` if no round measured one."""
    measured = [v for v in values if v is not None]
    return statistics.median(measured) if measured else None


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--stream-runs", type=int, default=20)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every pair this many times, alternating the targets' order; "
        "ratios are taken per round and reported as their median",
    )
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument(
        "--code", help="benchmark the package of another checkout (e.g. a git worktree) instead"
    )
    args = parser.parse_args()
    targets, workloads = args.targets.split(","), args.workloads.split(",")

    rounds: list[list[Result]] = []
    with (
        tempfile.TemporaryDirectory() as scratch,
        durable_postgres(enabled="postgres" in targets) as pg,
    ):
        for number in range(args.rounds):
            results: list[Result] = []
            # Workload by workload, so that a target and its anchor are measured
            # seconds apart, not a whole round apart.
            for workload in workloads:
                for target in targets if number % 2 == 0 else targets[::-1]:
                    if target == ANCHOR and workload == "stream":
                        continue  # the hand-written endpoint has no event stream
                    database = (
                        pg.create_database()
                        if target == "postgres"
                        else f"{scratch}/{target}-{workload}-{number}.db"
                    )
                    result = await measure(target, workload, args, database)
                    result.round = number
                    results.append(result)
                    print_table(results[-1:])
            rounds.append(results)
    results = [result for results in rounds for result in results]
    print()
    print_table(results)
    print()
    for name, values, floor in across_rounds(rounds):
        value = median_of(values)
        shown = "     -" if value is None else f"{value:6.2f}x"
        each = ""
        if len(values) > 1:  # the median's rounds, in order
            each = "  rounds: " + ", ".join("-" if v is None else f"{v:.2f}" for v in values)
        print(f"{name:<32} {shown}  {verdict(value, floor)}{each}")
    for target in dict.fromkeys(r.target for r in results if r.workload == "stream"):
        if target == "reference":
            continue
        streams = (r for r in results if r.target == target and r.workload == "stream")
        rate = median_of([r.events_per_s or None for r in streams])  # 0: none completed
        shown = f"{rate:,.0f} events/s" if rate else "not measured"
        print(f"{'one SSE client, ' + target:<32} {shown}  (target >= 20,000)")
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
