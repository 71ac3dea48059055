"""Many long-lived event streams at once: no errors, and memory back to its baseline.

    python -m benchmarks.load [--clients 200] [--seconds 60] [--target sqlite]

Each client starts a run that writes an event every 0.3 s for ``--seconds``
and follows it over SSE until its final event, checking that sequences only
grow and nothing is missing. The server's resident memory is sampled before
(after a warm-up), during and after each of ``--rounds`` rounds: a leak grows
round after round, while the allocator's high-water mark stays put.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.postgres import durable_postgres
from benchmarks.run import Server


@dataclass(frozen=True)
class Memory:
    rss: float
    heap: float


@dataclass
class Tally:
    events: int = 0
    errors: list[str] = field(default_factory=list)


async def heap_mb(url: str, traced: bool) -> float:
    """Memory held by the server's live Python objects (traced by tracemalloc); 0 if untraced."""
    if not traced:
        return 0.0
    async with httpx.AsyncClient(base_url=url) as http:
        return float((await http.get("/__bench/heap")).json()["current_mb"])


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


async def follow(url: str, count: int, interval: float, tally: Tally) -> None:
    body = {"start_event": {"count": count, "interval": interval}}
    async with httpx.AsyncClient(base_url=url, timeout=None) as http:
        handler_id = (await http.post("/workflows/drip/run-nowait", json=body)).json()["handler_id"]
    last, seen = -1, 0
    # A fresh connection for the stream: reusing the keep-alive connection of
    # the POST right away occasionally fails with a ReadError in httpx against
    # uvicorn, with any ASGI app (reproduced with a bare FastAPI endpoint).
    async with (
        httpx.AsyncClient(base_url=url, timeout=None) as http,
        http.stream("GET", f"/events/{handler_id}", params={"after_sequence": "-1"}) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                sequence = int(line[4:])
                if sequence <= last:
                    tally.errors.append(f"{handler_id}: sequence went back {last} -> {sequence}")
                last = sequence
            elif line.startswith("data: "):
                seen += 1
                json.loads(line[6:])
    tally.events += seen
    if seen != count + 1:
        tally.errors.append(f"{handler_id}: {seen} events, expected {count + 1}")


async def one_round(url: str, clients: int, count: int, interval: float, tally: Tally) -> None:
    results = await asyncio.gather(
        *(follow(url, count, interval, tally) for _ in range(clients)), return_exceptions=True
    )
    tally.errors += [repr(r) for r in results if isinstance(r, BaseException)]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--target", default="sqlite", choices=["memory", "sqlite", "postgres"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--heap", action="store_true", help="also report the live Python heap (tracemalloc)"
    )
    args = parser.parse_args()
    count = int(args.seconds / args.interval)
    with (
        tempfile.TemporaryDirectory() as scratch,
        durable_postgres(enabled=args.target == "postgres") as pg,
    ):
        database = pg.create_database() if args.target == "postgres" else f"{scratch}/load.db"
        if args.heap:  # the server traces allocations (which itself costs memory)
            os.environ["BENCH_HEAP"] = "1"
        server = Server(args.target, database)
        try:
            await server.ready()
            await one_round(server.url, 10, 5, 0.01, Tally())  # warm-up
            await asyncio.sleep(2)
            baseline = Memory(rss_mb(server.process.pid), await heap_mb(server.url, args.heap))
            print(
                f"server baseline: RSS {baseline.rss:.1f} MB, live Python heap "
                f"{baseline.heap:.1f} MB ({args.target} store)"
            )
            for number in range(1, args.rounds + 1):
                await measured_round(server, args, count, number, baseline)
        finally:
            server.stop()


async def measured_round(
    server: Server, args: argparse.Namespace, count: int, number: int, baseline: Memory
) -> None:
    tally, peak = Tally(), 0.0
    started = time.perf_counter()
    task = asyncio.create_task(one_round(server.url, args.clients, count, args.interval, tally))
    while not task.done():
        peak = max(peak, rss_mb(server.process.pid))
        await asyncio.sleep(0.5)
    await task
    elapsed = time.perf_counter() - started
    await asyncio.sleep(5)
    after = Memory(rss_mb(server.process.pid), await heap_mb(server.url, args.heap))
    print(
        f"round {number}: {args.clients} clients x {count + 1} events in {elapsed:.1f} s, "
        f"{tally.events:,} events, {len(tally.errors)} errors; RSS peak {peak:.1f} MB, "
        f"after {after.rss:.1f} MB ({after.rss - baseline.rss:+.1f}); live heap after "
        f"{after.heap:.1f} MB ({after.heap - baseline.heap:+.1f} vs baseline)"
    )
    for error in tally.errors[:10]:
        print("  ", error)


if __name__ == "__main__":
    asyncio.run(main())
