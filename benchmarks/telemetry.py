"""The CPU cost of telemetry per echo run: ``python -m benchmarks.telemetry``.

Each measurement is a fresh interpreter that runs ``--runs`` echo runs (16 at
a time) through the run service on the memory store and reports the process
CPU time (user + system) per run; throughput on a shared machine moves with
the neighbours' load, CPU time per run much less. Configurations, interleaved
over ``--rounds`` rounds (medians reported):

* ``baseline``: the package of another checkout without telemetry (``--code``);
* ``api``: this package with the OpenTelemetry API and no SDK (its no-op);
* ``sampled``: the SDK with ``ParentBased(TraceIdRatioBased(0.1))``, spans
  batched to an exporter that drops them, metrics to an in-memory reader;
* ``all``: the same, every trace sampled.

``--hooks`` times the telemetry calls of one run alone (accept, execute a
step, a group commit, end), without the engine: a figure that does not depend
on the neighbours' load, to read against the CPU time of a whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from benchmarks.checkout import Checkout, check_package, run

CONFIGS = ["baseline", "api", "sampled", "all"]


async def _measure(runs: int, concurrency: int) -> float:
    from workflows.events import StartEvent

    from benchmarks.workloads import workflows
    from llama_workflows_asgi import MemoryWorkflowStore, WorkflowService

    service = WorkflowService(MemoryWorkflowStore())
    service.add_workflow("echo", workflows()["echo"])
    async with service.running_context():

        async def worker(count: int) -> None:
            for _ in range(count):
                done = await service.run("echo", StartEvent(text="hi"))  # type: ignore[call-arg]
                assert done.status == "completed"

        await worker(50)  # warm up
        began = time.process_time()
        await asyncio.gather(*(worker(runs // concurrency) for _ in range(concurrency)))
        return (time.process_time() - began) * 1000 / (runs // concurrency * concurrency)


async def _hooks(runs: int) -> float:
    from llama_workflows_asgi.store.base import PersistentHandler
    from llama_workflows_asgi.telemetry import Telemetry, batch_written, step_coroutine

    telemetry = Telemetry()

    async def step_body() -> None:
        return None

    began = time.process_time()
    for _ in range(runs):
        row = PersistentHandler(
            handler_id="h", workflow_name="echo", status="running", run_id="r", start_event={}
        )
        run = telemetry.accepted(row)
        with run.executing():
            step = step_coroutine("echo", 0, step_body())
        await step
        batch_written(1, 0.001)
        run.ended("completed")
    return (time.process_time() - began) * 1000 / runs


def _child(config: str, runs: int, hooks: bool) -> None:
    check_package()
    if config in ("sampled", "all"):
        from benchmarks.apps import _configure_otel

        _configure_otel(config)
    measured = _hooks(runs) if hooks else _measure(runs, 16)
    print(json.dumps({"cpu_ms_per_run": asyncio.run(measured)}))


def _run(config: str, runs: int, code: str | None, hooks: bool) -> float:
    checkout = Checkout(code if config == "baseline" else None)
    command = [sys.executable, "-m", "benchmarks.telemetry", "--child", config, "--runs", str(runs)]
    command += ["--hooks"] if hooks else []
    try:
        out = run(command, checkout)
    finally:
        checkout.close()
    return float(json.loads(out.stdout.strip().splitlines()[-1])["cpu_ms_per_run"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--code", help="checkout without telemetry, for the baseline")
    parser.add_argument("--hooks", action="store_true", help="time the telemetry calls alone")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.runs, args.hooks)
        return
    configs = CONFIGS if args.code and not args.hooks else CONFIGS[1:]
    samples: dict[str, list[float]] = {c: [] for c in configs}
    for round_ in range(args.rounds):
        for config in configs:
            samples[config].append(_run(config, args.runs, args.code, args.hooks))
        print(f"round {round_ + 1}: " + "  ".join(f"{c} {s[-1]:.3f}" for c, s in samples.items()))
    base = statistics.median(samples[configs[0]])
    print(f"\n{'config':<10} {'median CPU ms/run':>18} {'vs ' + configs[0]:>10}")
    for config, values in samples.items():
        median = statistics.median(values)
        print(f"{config:<10} {median:>18.4f} {median / base - 1:>+10.1%}")


if __name__ == "__main__":
    main()
