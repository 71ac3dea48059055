"""Where a run's CPU goes in the run service: ``python -m benchmarks.profile_service``.

Runs ``--runs`` runs of one workload (``echo`` or ``chain``), ``--concurrency``
at a time, in this process, then prints the process CPU time per run and (with
``--profile``) the cProfile entries with the most own CPU time and the most
cumulative CPU time. What runs them (``--via``):

* ``service`` (default): ``WorkflowService.run()`` on the memory store, no HTTP;
* ``engine``: ``workflow.run()`` alone, no service: the floor the service's own
  cost sits on;
* ``http-memory`` / ``http-handwritten``: ``POST /workflows/{name}/run`` handed
  straight to the ASGI app of ``benchmarks.apps`` (no sockets, no server), to
  see the HTTP edge's share against the hand-written endpoint's.

Use it before and after a change, back to back: on a shared machine CPU time
per run moves much less than throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import time
from collections.abc import Awaitable, Callable
from typing import Any

VIAS = ["service", "engine", "http-memory", "http-handwritten"]
BODIES = {"echo": {"start_event": {"text": "hi"}}, "chain": {"start_event": {}}}


async def _loop(
    runs: int,
    concurrency: int,
    once: Callable[[], Awaitable[Any]],
    profiler: cProfile.Profile | None,
) -> float:
    async def worker(count: int) -> None:
        for _ in range(count):
            await once()

    await worker(50)  # warm up (imports, caches): not measured
    if profiler is not None:
        profiler.enable()
    began = time.process_time()
    per = runs // concurrency
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    spent = time.process_time() - began
    if profiler is not None:
        profiler.disable()
    return spent * 1000 / (per * concurrency)


async def _measure(
    workload: str, via: str, runs: int, concurrency: int, profiler: cProfile.Profile | None
) -> float:
    from workflows.events import StartEvent

    from benchmarks.workloads import workflows
    from llama_workflows_asgi import MemoryWorkflowStore, WorkflowService

    if via.startswith("http-"):
        return await _measure_http(workload, via[5:], runs, concurrency, profiler)
    workflow = workflows()[workload]
    if via == "engine":

        async def bare() -> Any:
            return await workflow.run(start_event=StartEvent(text="hi"))  # type: ignore[call-arg]

        return await _loop(runs, concurrency, bare, profiler)
    service = WorkflowService(MemoryWorkflowStore())
    service.add_workflow(workload, workflow)
    async with service.running_context():

        async def durable() -> Any:
            done = await service.run(workload, StartEvent(text="hi"))  # type: ignore[call-arg]
            assert done.status == "completed", done
            return done

        return await _loop(runs, concurrency, durable, profiler)


async def _measure_http(
    workload: str, target: str, runs: int, concurrency: int, profiler: cProfile.Profile | None
) -> float:
    os.environ["BENCH_TARGET"] = target
    from benchmarks.apps import create_app

    app = create_app()
    body = json.dumps(BODIES[workload]).encode()
    path = f"/workflows/{workload}/run"

    async def post() -> None:
        status, answer = await _call(app, path, body)
        assert status == 200, (status, answer)

    async with _Lifespan(app):
        return await _loop(runs, concurrency, post, profiler)


async def _call(app: Any, path: str, body: bytes) -> tuple[int, bytes]:
    """One HTTP request through the ASGI interface, as uvicorn would make it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent = False
    status, chunks = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


class _Lifespan:
    """Run the app's ASGI lifespan (startup on entry, shutdown on exit)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.ensure_future(self._app(scope, self._inbox.get, self._outbox.put))
        await self._inbox.put({"type": "lifespan.startup"})
        answer = await self._outbox.get()
        assert answer["type"] == "lifespan.startup.complete", answer

    async def __aexit__(self, *exc: object) -> None:
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._outbox.get()
        assert self._task is not None
        await self._task


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workload", default="echo", choices=sorted(BODIES))
    parser.add_argument("--via", default="service", choices=VIAS)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--save", help="also write the profile to this file (pstats)")
    args = parser.parse_args()
    # CPU time, not wall time: on a shared machine the wall clock counts the neighbours.
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    measured = _measure(args.workload, args.via, args.runs, args.concurrency, profiler)
    cpu = asyncio.run(measured)
    if profiler is None:
        print(f"{args.workload}: {cpu:.3f} cpu ms/run")
        return
    print(f"{args.workload}: {cpu:.3f} cpu ms/run (under the profiler)")
    if args.save:
        profiler.dump_stats(args.save)
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
        print(out.getvalue())


if __name__ == "__main__":
    main()
