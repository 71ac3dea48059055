"""Every benchmark, one after the other: ``python -m benchmarks [--quick] [--load]``.

1. throughput against the reference server (``benchmarks.run``),
2. listing cost at 1,000 and 100,000 handlers (``benchmarks.listing``),
3. resume cost after 10 and 10,000 steps, and adopting 1,000 runs (``benchmarks.resume``),
4. pruning 100,000 finished runs under load (``benchmarks.prune``),
5. statements per run, per ownership round and per streamed event with 1, 2
   and 4 replicas on one PostgreSQL (``benchmarks.cluster``),
6. an answer sent to one replica for a run live on another, until its stream
   there ends (``benchmarks.cross_replica``),
7. 300 SSE streams on runs released after ``idle_timeout`` (``benchmarks.idle_streams``),
8. with ``--load``: 200 SSE clients for a minute (``benchmarks.load``).

``--quick`` shortens every measurement (for a smoke run, not for figures).
"""

from __future__ import annotations

import subprocess
import sys

QUICK = {
    "run": ["--duration", "3", "--warmup", "1", "--stream-runs", "5"],
    "listing": ["--sizes", "1000,20000", "--repeat", "10"],
    "resume": ["--steps", "10,1000", "--runs", "200", "--repeat", "1"],
    "prune": ["--runs", "10000", "--baseline", "3"],
    "cluster": ["--quick"],
    "cross_replica": ["--rounds", "5"],
    "idle_streams": ["--streams", "50", "--window", "3"],
    "load": ["--clients", "50", "--seconds", "5", "--rounds", "1"],
}
FULL = {
    "run": [],
    "listing": ["--postgres"],
    "resume": ["--postgres"],
    "prune": [],
    "cluster": [],
    "cross_replica": [],
    "idle_streams": [],
    "load": [],
}


def main() -> int:
    quick, load = "--quick" in sys.argv, "--load" in sys.argv
    steps = ["run", "listing", "resume", "prune", "cluster", "cross_replica", "idle_streams"]
    steps += ["load"] if load else []
    for name in steps:
        arguments = (QUICK if quick else FULL)[name]
        print(f"\n=== benchmarks.{name} {' '.join(arguments)}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *arguments])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
