"""An answer sent to one replica for a run live on another: how long until it is streamed back.

    python -m benchmarks.cross_replica [--rounds 20] [--poll-interval 1]
                                       [--stream-poll-interval 0.5]

Two uvicorn processes of the test app (``tests.support.crash_app``) share one
PostgreSQL (durable settings). Each round starts a ``hitl`` run on one replica,
follows it over SSE from the other, POSTs the answer to the other and times
until the run's final event arrives on that stream; rounds alternate the
direction. Every stream is checked against the run's log (every event once,
in order). Prints p50/p99/max in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from benchmarks.postgres import durable_postgres
from tests.support.cross_replica import answer_elsewhere, percentile
from tests.support.processes import ServerProcess, server_processes


async def measure(url: str, args: argparse.Namespace, log_dir: Path) -> list[float]:
    env = {
        "WF_DATABASE_URL": url,
        "WF_POLL_INTERVAL": str(args.poll_interval),
        "WF_STREAM_POLL_INTERVAL": str(args.stream_poll_interval),
        "WF_LEASE_TTL": str(max(8.0, args.poll_interval * 3)),
        "WF_IDLE_TIMEOUT": "none",
    }
    a, b = ServerProcess("a", dict(env), log_dir), ServerProcess("b", dict(env), log_dir)
    with server_processes(a, b):
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        await answer_elsewhere(a.url, b.url)  # warm-up
        samples = []
        for i in range(args.rounds):
            owner, other = (a, b) if i % 2 == 0 else (b, a)
            samples.append(await answer_elsewhere(owner.url, other.url))
        return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--stream-poll-interval", type=float, default=0.5)
    args = parser.parse_args()
    with durable_postgres() as server, tempfile.TemporaryDirectory() as log_dir:
        samples = await measure(server.create_database(), args, Path(log_dir))
    ms = [s * 1000 for s in samples]
    print(
        f"answer on the other replica, {len(ms)} rounds "
        f"(poll {args.poll_interval} s, stream poll {args.stream_poll_interval} s): "
        f"p50 {percentile(ms, 0.5):.0f} ms, p99 {percentile(ms, 0.99):.0f} ms, "
        f"max {max(ms):.0f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
