"""What a cluster costs its PostgreSQL: statements per run, per ownership round, per streamed event.

    python -m benchmarks.cluster [--quick] [--replicas 1,2,4] [--waiting 0,100,1000]

For each cluster size, fresh replica processes (``benchmarks.cluster_app`` in
uvicorn) share a fresh database on one durable PostgreSQL, and each phase is
counted twice: by a cursor hook in every replica (statements by kind, an
``executemany`` once) and by the server (``pg_stat_statements``: executions,
``BEGIN``/``COMMIT`` included, and rows written; WAL bytes; CPU of all
PostgreSQL processes). ``--quick``: 1 and 2 replicas, 0 and 100 waiting runs,
fewer runs and shorter windows (a smoke run). Phases, in this order:

1. **rounds, 0 waiting runs**: nothing but the replicas' own loops for
   ``--window`` seconds; this is the background later phases subtract;
2. **per run**: ``echo`` and the 20-step ``chain`` started with ``POST /run``
   round-robin on the replicas by ``--clients`` concurrent clients;
3. **per streamed event**: a ``drip`` run on replica 1 writes ``--events``
   events; read by no stream, then by 1 and 10 streams on replica 1 (the one
   executing it) and on replica 2; the extra statements over the unread run,
   per event and per stream;
4. **rounds, W waiting runs** (``--waiting``, spread round-robin): runs waiting
   for a human answer, kept live (``idle_timeout=None``).

Rounds are counted by the statement each round sends once (the lease
renewal; an owners-table heartbeat once that lands; ``BENCH_ROUND_PATTERN`` in
``benchmarks.cluster_app`` to match another), else by time, ``window /
poll_interval``, which overestimates them when rounds are slow.
Machine-independent counts, not speed: this machine has 2 cores for everyone.
Prints tables and writes ``benchmarks/results/cluster.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.cluster_probe import SETTINGS, Cluster, Sample, ServerStats
from benchmarks.loadgen import Connection
from benchmarks.postgres import durable_postgres
from tests.support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("select", "insert", "update", "delete", "notify")
Figures = dict[str, float]


def figures(sample: Sample, per: float, background: Sample | None = None) -> Figures:
    """The sample's counts divided by ``per``, less the background's per ownership round.

    Per round, not per second: under load rounds come less often than when idle.

    WAL is not corrected: the background writes almost none, but now and then a
    checkpoint or autovacuum's, which would then be taken off every later phase.
    """
    client, server = sample.client(), sample.server
    if background is not None:
        scale = sample.rounds / background.rounds
        client = _minus(client, background.client(), scale)
        server = _minus(server, background.server, scale)
        server["wal_bytes"] = sample.server["wal_bytes"]
    out = {f"{kind}": client[f"s.{kind}"] for kind in KINDS}
    out["other"] = client["statements"] - sum(out.values())
    out["statements"] = client["statements"]
    # The client's rowcount misses most rows of an executemany: the server's count.
    out["client_rows_written"] = client["rows_written"]
    for key in ("executions", "rows_written", "commits", "wal_bytes", "pg_cpu_ms"):
        out[key] = server[key]
    out["tx"] = server["x.tx"]
    # Sent on a raw driver connection (a LISTEN connection), these escape the client hook.
    out["server_notify"], out["server_listen"] = server["x.notify"], server["x.listen"]
    return {key: value / per for key, value in out.items()}


def _minus(counts: Counter[str], background: Counter[str], scale: float) -> Counter[str]:
    keys = set(counts) | set(background)
    return Counter({key: counts[key] - background[key] * scale for key in keys})


async def per_round(cluster: Cluster, waiting: int, window: float) -> tuple[Figures, Sample]:
    """Figures per replica per round with ``waiting`` live runs waiting for an answer."""
    await start_waiting(cluster, waiting - await cluster.gauge("waiting"))
    while await cluster.gauge("waiting") < waiting:  # noqa: ASYNC110 - a count over HTTP
        await asyncio.sleep(0.1)
    await cluster.settle()  # their first checkpoints and events are written
    await cluster.reset()
    await asyncio.sleep(window)
    sample = await cluster.sample()
    figs = figures(sample, sample.rounds)
    figs["counted_by_statement"] = float(sample.client()["rounds"] > 0)
    return figs, sample


async def start_waiting(cluster: Cluster, count: int, clients: int = 32) -> None:
    numbers = iter(range(count))
    await _drive(cluster, numbers, clients, "/workflows/wait/run-nowait", {"start_event": {}})


async def _drive(
    cluster: Cluster, numbers: Any, clients: int, path: str, body: dict[str, Any]
) -> None:
    """``clients`` loops sending ``POST path`` for each number, to replica ``number % size``."""

    async def client() -> None:
        connections = [_connect(replica.url) for replica in cluster.replicas]
        used = [time.monotonic()] * len(connections)
        try:
            for number in numbers:
                index = number % len(connections)
                if time.monotonic() - used[index] > 2.0:  # before uvicorn's 5 s keep-alive ends
                    await connections[index].close()
                    connections[index] = _connect(cluster.replicas[index].url)
                response = await connections[index].request("POST", path, body)
                used[index] = time.monotonic()
                if response.status != 200:
                    raise RuntimeError(f"{path}: {response.status} {response.body[:200]!r}")
        finally:
            await asyncio.gather(*(c.close() for c in connections))

    await asyncio.gather(*(client() for _ in range(clients)))


def _connect(url: str) -> Connection:
    host, port = url.removeprefix("http://").split(":")
    return Connection(host, int(port))


async def per_run(
    cluster: Cluster, workload: str, runs: int, clients: int, background: Sample
) -> tuple[Figures, Sample]:
    """Figures per completed run, net of the background."""
    await cluster.reset()
    body: dict[str, Any] = {"start_event": {"text": "hi"} if workload == "echo" else {}}
    await _drive(cluster, iter(range(runs)), clients, f"/workflows/{workload}/run", body)
    await cluster.settle()
    sample = await cluster.sample()
    return figures(sample, runs, background), sample


async def streamed(cluster: Cluster, reader: int | None, streams: int, events: int) -> Sample:
    """Counts for one drip run on replica 0, read by ``streams`` streams on ``reader``."""
    await cluster.reset()
    body = {"start_event": {"count": events, "interval": 0.02}}
    dripped = await cluster.gauge("dripped")
    started = await cluster.http[0].post("/workflows/drip/run-nowait", json=body)
    handler_id = started.json()["handler_id"]
    if reader is None:
        while await cluster.gauge("dripped") == dripped:  # noqa: ASYNC110 - a count over HTTP
            await asyncio.sleep(0.05)
    else:
        counts = await asyncio.gather(
            *(_read_stream(cluster, reader, handler_id) for _ in range(streams))
        )
        if counts != [events + 1] * streams:
            raise RuntimeError(f"streams got {counts} events, expected {events + 1} each")
    await cluster.settle()
    return await cluster.sample()


async def _read_stream(cluster: Cluster, reader: int, handler_id: str) -> int:
    frames = 0
    params = {"after_sequence": "-1"}
    async with cluster.http[reader].stream("GET", f"/events/{handler_id}", params=params) as reply:
        async for chunk in reply.aiter_bytes():
            frames += chunk.count(b"\ndata: ") + chunk.startswith(b"data: ")
    return frames


async def measure_cluster(
    pg: PostgresServer, stats: ServerStats, size: int, args: argparse.Namespace
) -> dict[str, Any]:
    env = {
        "BENCH_POLL_INTERVAL": str(args.poll_interval),
        "BENCH_STREAM_POLL_INTERVAL": str(args.stream_poll_interval),
    }
    result: dict[str, Any] = {"replicas": size, "rounds": {}, "runs": {}, "streams": {}}
    top = result["top_statements"] = {}
    async with Cluster(pg, stats, size, **env) as cluster:
        idle, background = await per_round(cluster, 0, args.window)
        result["rounds"][0], top["rounds, 0 waiting"] = idle, background.top
        result["background_per_s"] = figures(background, background.seconds)
        for workload, runs in (("echo", args.echo_runs), ("chain", args.chain_runs)):
            figs, sample = await per_run(cluster, workload, runs, args.clients, background)
            result["runs"][workload], top[f"runs, {workload}"] = figs, sample.top
        result["streams"] = await per_event(cluster, args.events, background, top)
        for waiting in (w for w in args.waiting if w):
            figs, sample = await per_round(cluster, waiting, args.window)
            result["rounds"][waiting], top[f"rounds, {waiting} waiting"] = figs, sample.top
        result["connections_open"] = await stats.connections(cluster.dbname)
    return result


async def per_event(
    cluster: Cluster, events: int, background: Sample, top: dict[str, Any]
) -> dict[str, Figures]:
    """Extra figures per streamed event (per stream), over the same run read by nobody.

    Client-side counts are the reading replica's alone (for another replica, its
    statements are the stream's and its own rounds'); the server's are every
    replica's. ``per_stream_s``: the extra statements per stream per second.
    """
    unread = await streamed(cluster, None, 0, events)
    out: dict[str, Figures] = {"unread run (whole run)": figures(unread, 1, background)}
    readers = {"executing replica": 0} | ({"other replica": 1} if len(cluster.replicas) > 1 else {})
    for (where, index), streams in itertools.product(readers.items(), (1, 10)):
        sample = await streamed(cluster, index, streams, events)
        read = figures(sample.only(index), 1, background.only(index))
        baseline = figures(unread.only(index), 1, background.only(index))
        name = f"{where}, {streams} stream(s)"
        extra = {key: read[key] - baseline[key] for key in read}
        out[name] = {key: value / (streams * (events + 1)) for key, value in extra.items()}
        out[name]["per_stream_s"] = extra["statements"] / streams / sample.seconds
        top[f"streams, {name}"] = sample.top
    return out


def print_results(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    head = f"{'':>30} {'stmts':>8} {'S/I/U/D/N/other':>24} {'rows':>7} {'execs':>7}"
    head += f" {'tx':>7} {'commits':>7} {'WAL B':>8} {'PG ms':>7}"

    def line(label: str, f: Figures) -> str:
        split = "/".join(f"{f[k]:.2f}" for k in (*KINDS, "other"))
        return (
            f"{label:>30} {f['statements']:8.2f} {split:>24} {f['rows_written']:7.2f}"
            f" {f['executions']:7.2f} {f['tx']:7.2f} {f['commits']:7.2f} {f['wal_bytes']:8.0f}"
            f" {f['pg_cpu_ms']:7.2f}"
            + (f"  {f['per_stream_s']:.2f} stmts/stream/s" if "per_stream_s" in f else "")
        )

    sections = (
        ("per completed run (net of background)", "runs", "{} replicas, {}"),
        (
            f"per replica per ownership round (poll_interval {args.poll_interval} s; rounds"
            " counted by their renewal statement unless marked *)",
            "rounds",
            "{} replicas, {} waiting",
        ),
        ("per streamed event, per stream (extra over an unread run)", "streams", "{} r, {}"),
    )
    for title, key, label in sections:
        print(f"\n{title}\n{head}")
        for result in results:
            for name, f in result[key].items():
                by_time = "*" if f.get("counted_by_statement") == 0.0 else ""
                print(line(label.format(result["replicas"], name) + by_time, f))
    opened = ", ".join(f"{r['replicas']} replica(s): {r['connections_open']}" for r in results)
    print(f"\nconnections open to the database at the end: {opened}")
    print("stmts: client statements (executemany once); S/I/U/D/N: select/insert/update/")
    print("delete/notify. The server's counts (pg_stat_statements): rows written, execs (all")
    print("executions), tx (BEGIN, COMMIT, ROLLBACK), commits; WAL B: WAL bytes; PG ms: CPU of")
    print("all PostgreSQL processes. Streams: client columns count the reading replica only.")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts, short windows")
    parser.add_argument("--replicas", default=None, help="cluster sizes (default 1,2,4)")
    parser.add_argument("--waiting", default=None, help="waiting runs (default 0,100,1000)")
    parser.add_argument("--window", type=float, default=None, help="seconds per round window")
    parser.add_argument("--echo-runs", type=int, default=None)
    parser.add_argument("--chain-runs", type=int, default=None)
    parser.add_argument("--events", type=int, default=None, help="events per drip run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--stream-poll-interval", type=float, default=0.5)
    args = parser.parse_args()
    quick, full = ("1,2", "0,100", 1.5, 60, 10, 40), ("1,2,4", "0,100,1000", 8.0, 400, 100, 100)
    defaults = quick if args.quick else full
    names = ("replicas", "waiting", "window", "echo_runs", "chain_runs", "events")
    for name, value in zip(names, defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.replicas = [int(n) for n in str(args.replicas).split(",")]
    args.waiting = sorted({0, *(int(n) for n in str(args.waiting).split(","))})
    asyncio.run(run_all(args))


async def run_all(args: argparse.Namespace) -> None:
    started = time.monotonic()
    results = []
    with durable_postgres(settings=SETTINGS) as pg:
        assert isinstance(pg, PostgresServer)
        stats = ServerStats(pg)
        await stats.open()
        try:
            for size in args.replicas:
                print(f"measuring {size} replica(s)...", flush=True)
                results.append(await measure_cluster(pg, stats, size, args))
        finally:
            await stats.close()
    print_results(results, args)
    print(f"\n({time.monotonic() - started:.0f} s)")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
    payload = {"machine": machine | {"platform": platform.platform()}, "args": vars(args)}
    (out / "cluster.json").write_text(json.dumps(payload | {"results": results}, indent=2))


if __name__ == "__main__":
    main()
