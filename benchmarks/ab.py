"""Two checkouts of the package, side by side: ``python -m benchmarks.ab --code <checkout>``.

    python -m benchmarks.ab --code <checkout> [--base <checkout>] [--target sqlite]
        [--workload echo|chain|fanout|stream] [--rounds 20] [--duration 2] [--clients 16]

Both servers run at once, each on a fresh database; the load goes to one at a
time, in rounds that alternate which goes first (A then B, then B then A), so
a drift of the machine's speed over minutes, which on a shared machine moves
throughput far more than most changes do, weighs on both alike. A round is a
``--duration`` window of the closed loop (``benchmarks.run``) on each server,
or one 1,000-event stream read by one SSE client. Printed: each side's median
throughput and server CPU (per run, or per stream), the medians of the
per-round ratios (B over A) and how many rounds B was ahead in.

A is ``--base`` (default: this checkout), B is ``--code``. Run it once with
both sides the same checkout to see the noise a ratio carries here.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

import httpx

from benchmarks.postgres import durable_postgres
from benchmarks.run import Server, closed_loop, stream_once


async def _round(
    server: Server, args: argparse.Namespace, http: httpx.AsyncClient
) -> tuple[float, float]:
    """One measurement on ``server``: events/s (stream) or runs/s (closed loop), and CPU.

    CPU is the server's (user + system) ms per stream or per completed run.
    """
    cpu = server.cpu_seconds()
    if args.workload == "stream":
        rate, complete = await stream_once(http)
        if not complete:
            raise RuntimeError(f"a stream from {server.url} ended early")
        return rate, (server.cpu_seconds() - cpu) * 1000
    result = await closed_loop(server.url, args.workload, args.clients, args.duration, 0.0)
    if result.errors:
        raise RuntimeError(f"{result.errors} runs failed on {server.url}")
    return result.runs_per_s, (server.cpu_seconds() - cpu) * 1000 / max(result.completed, 1)


async def compare(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory() as scratch,
        durable_postgres(enabled=args.target == "postgres") as pg,
    ):
        servers = []
        for name, code in (("a", args.base), ("b", args.code)):  # a database each
            if args.target == "postgres":
                database = pg.create_database()
            else:
                database = str(Path(scratch) / f"{name}.db")
            servers.append(Server(args.target, database, code))
        clients = [httpx.AsyncClient(base_url=s.url, timeout=120) for s in servers]
        try:
            for server, http in zip(servers, clients, strict=True):
                await server.ready()
                for _ in range(2):  # warm up
                    await _warm(server, args, http)
            rounds: list[list[tuple[float, float]]] = [[], []]
            for number in range(args.rounds):
                for side in (0, 1) if number % 2 == 0 else (1, 0):
                    rounds[side].append(await _round(servers[side], args, clients[side]))
        finally:
            for server, http in zip(servers, clients, strict=True):
                await http.aclose()
                server.stop()
    unit = "events/s" if args.workload == "stream" else "runs/s"
    cpu_unit = "ms per stream" if args.workload == "stream" else "ms per run"
    print(f"{args.target} {args.workload}, {args.rounds} rounds (medians)")
    for label, measured in (("A", rounds[0]), ("B", rounds[1])):
        name = (args.base or "this checkout") if label == "A" else args.code
        rate = statistics.median(r for r, _ in measured)
        cpu = statistics.median(c for _, c in measured)
        print(f"  {label} {name}: {rate:,.1f} {unit}, server CPU {cpu:.3f} {cpu_unit}")
    pairs = list(zip(*rounds, strict=True))
    rates = [b[0] / a[0] for a, b in pairs]
    cpus = [b[1] / a[1] for a, b in pairs]
    ahead = sum(ratio > 1 for ratio in rates)
    print(f"  B/A per round: {unit} {statistics.median(rates):.3f} (B ahead in {ahead}),", end=" ")
    print(f"CPU {statistics.median(cpus):.3f}")


async def _warm(server: Server, args: argparse.Namespace, http: httpx.AsyncClient) -> None:
    if args.workload == "stream":
        await stream_once(http)
    else:
        await closed_loop(server.url, args.workload, args.clients, 0.5, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", required=True, help="checkout B (e.g. a git worktree)")
    parser.add_argument("--base", help="checkout A (default: this checkout)")
    parser.add_argument("--target", default="sqlite", choices=["memory", "sqlite", "postgres"])
    parser.add_argument("--workload", default="echo", choices=["echo", "chain", "fanout", "stream"])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per loop window")
    parser.add_argument("--clients", type=int, default=16)
    asyncio.run(compare(parser.parse_args()))


if __name__ == "__main__":
    main()
