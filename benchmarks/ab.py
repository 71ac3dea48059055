"""Two checkouts of the package, side by side: ``python -m benchmarks.ab --code <checkout>``.

    python -m benchmarks.ab --code <checkout> [--base <checkout>] [--target sqlite]
        [--workload echo|chain|fanout|stream] [--rounds 20] [--duration 2] [--clients 16]

Both servers run at once, each on a fresh database; the load goes to one at a
time, in rounds that alternate which goes first (A then B, then B then A), so
a drift of the machine's speed over minutes, which on a shared machine moves
throughput far more than most changes do, weighs on both alike. A round is a
``--duration`` window of the closed loop (``benchmarks.run``) on each server,
or one 1,000-event stream read by one SSE client. Printed: each side's median
throughput and its server CPU per run (or per stream) over all its rounds
(a round is a few of the clock's 10 ms ticks), the median of the per-round
throughput ratios (B over A), how many rounds B was ahead in, and B's CPU
over A's.

A is ``--base`` (default: this checkout), B is ``--code``. Run it once with
both sides the same checkout to see the noise a ratio carries here.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.postgres import durable_postgres
from benchmarks.run import Server, closed_loop, stream_once


@dataclass
class _Side:
    """One checkout's server and what its rounds measured."""

    server: Server
    http: httpx.AsyncClient
    rates: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0  # summed over the rounds: one round is a few clock ticks
    units: int = 0  # runs completed, or streams read


async def _round(side: _Side, args: argparse.Namespace) -> None:
    """One measurement on ``side``: events/s (stream) or runs/s (closed loop), and its CPU."""
    cpu = side.server.cpu_seconds()
    if args.workload == "stream":
        rate, complete = await stream_once(side.http)
        if not complete:
            raise RuntimeError(f"a stream from {side.server.url} ended early")
        units = 1
    else:
        result = await closed_loop(side.server.url, args.workload, args.clients, args.duration, 0.0)
        if result.errors or not result.runs:
            raise RuntimeError(f"{result.runs} runs, {result.errors} failed on {side.server.url}")
        rate, units = result.runs_per_s, result.completed
    side.rates.append(rate)
    side.cpu_seconds += side.server.cpu_seconds() - cpu
    side.units += units


async def compare(args: argparse.Namespace) -> tuple[_Side, _Side]:
    """Both servers up, ``args.rounds`` rounds each, alternating which goes first."""
    sides: list[_Side] = []
    with (
        tempfile.TemporaryDirectory() as scratch,
        durable_postgres(enabled=args.target == "postgres") as pg,
    ):
        try:
            for name, code in (("a", args.base), ("b", args.code)):  # a database each
                if args.target == "postgres":
                    database = pg.create_database()
                else:
                    database = str(Path(scratch) / f"{name}.db")
                server = Server(args.target, database, code)
                sides.append(_Side(server, httpx.AsyncClient(base_url=server.url, timeout=120)))
            for side in sides:
                await side.server.ready()
                for _ in range(2):  # warm up
                    await _warm(side, args)
            for number in range(args.rounds):
                for side in sides if number % 2 == 0 else sides[::-1]:
                    await _round(side, args)
        finally:
            for side in sides:
                await side.http.aclose()
                side.server.stop()
    return sides[0], sides[1]


def report(args: argparse.Namespace, a: _Side, b: _Side) -> None:
    """Print each side's medians and CPU, and B against A."""
    unit = "events/s" if args.workload == "stream" else "runs/s"
    per = "stream" if args.workload == "stream" else "run"
    print(f"{args.target} {args.workload}, {args.rounds} rounds")
    for label, side, name in (("A", a, args.base or "this checkout"), ("B", b, args.code)):
        cpu = side.cpu_seconds * 1000 / side.units
        print(f"  {label} {name}: median {statistics.median(side.rates):,.1f} {unit},", end=" ")
        print(f"server CPU {cpu:.3f} ms per {per}")
    ratios = [rb / ra for ra, rb in zip(a.rates, b.rates, strict=True)]
    ahead = sum(ratio > 1 for ratio in ratios)
    print(f"  B/A: {unit} per round, median {statistics.median(ratios):.3f}", end=" ")
    print(f"(B ahead in {ahead} of {len(ratios)}); CPU per {per}", end=" ")
    a_cpu, b_cpu = a.cpu_seconds / a.units, b.cpu_seconds / b.units
    print(f"{b_cpu / a_cpu:.3f} (lower is cheaper)" if a_cpu > 0 else "not measured")


async def _warm(side: _Side, args: argparse.Namespace) -> None:
    if args.workload == "stream":
        await stream_once(side.http)
    else:
        await closed_loop(side.server.url, args.workload, args.clients, 0.5, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", required=True, help="checkout B (e.g. a git worktree)")
    parser.add_argument("--base", help="checkout A (default: this checkout)")
    parser.add_argument("--target", default="sqlite", choices=["memory", "sqlite", "postgres"])
    parser.add_argument("--workload", default="echo", choices=["echo", "chain", "fanout", "stream"])
    parser.add_argument("--rounds", type=_positive, default=20)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per loop window")
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    report(args, *asyncio.run(compare(args)))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


if __name__ == "__main__":
    main()
