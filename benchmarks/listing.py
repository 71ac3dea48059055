"""Listing cost as the handler table grows: a page must cost the same at 1k and 100k rows.

    python -m benchmarks.listing [--sizes 1000,100000] [--postgres]

The table is filled with finished and running handlers of three workflows;
then pages of 100 are read through the service the way ``GET /handlers``
reads them: the first page, a page deep in the listing (keyset cursor), the
newest first, and filtered by status and by workflow. Median of 30 reads.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import timedelta
from typing import Any

from benchmarks.postgres import durable_postgres
from llama_workflows_asgi import HandlerQuery, SqlAlchemyWorkflowStore
from llama_workflows_asgi.service import WorkflowService
from llama_workflows_asgi.store.base import HandlerCursor, utcnow
from llama_workflows_asgi.store.schema import handlers_table

QUERIES: dict[str, dict[str, Any]] = {
    "first page": {},
    "deep page": {"deep": True},
    "newest first": {"descending": True},
    "running only": {"status_in": ["running"]},
    "one workflow": {"workflow_name_in": ["w1"]},
}


RESULT = (
    '{"value":{"result":1},"qualified_name":"workflows.events.StopEvent",'
    '"type":"StopEvent","types":null}'
)


def rows(count: int) -> list[dict[str, Any]]:
    start = utcnow() - timedelta(days=30)
    statuses = ["completed"] * 8 + ["failed", "running"]
    return [
        {
            "handler_id": f"h{i:08d}",
            "workflow_name": f"w{i % 3}",
            "status": statuses[i % 10],
            "run_id": f"r{i:08d}",
            "result": RESULT,
            "started_at": start + timedelta(seconds=i),
            "updated_at": start + timedelta(seconds=i),
            "resume_attempts": 0,
            # Running rows belong to a live process elsewhere, so this service leaves them be.
            "owner_id": "elsewhere:1:bench" if statuses[i % 10] == "running" else None,
            "lease_expires_at": start + timedelta(days=60)
            if statuses[i % 10] == "running"
            else None,
        }
        for i in range(count)
    ]


async def fill(store: SqlAlchemyWorkflowStore, count: int) -> None:
    engine = store._engines.write if store._engines else None  # bulk load, bypassing the API
    assert engine is not None
    batch = rows(count)
    async with engine.begin() as conn:
        for i in range(0, count, 5000):
            await conn.execute(handlers_table.insert(), batch[i : i + 5000])


async def timings(url: str, count: int, repeat: int) -> dict[str, float]:
    store = SqlAlchemyWorkflowStore(url, migrate=True)
    svc = WorkflowService(store)
    await svc.start()
    await fill(store, count)
    middle = (await store.query(HandlerQuery(handler_id_in=[f"h{count // 2:08d}"])))[0]
    results = {}
    for name, spec in QUERIES.items():
        spec = dict(spec)
        after = (
            HandlerCursor(middle.started_at, middle.handler_id) if spec.pop("deep", False) else None
        )
        query = HandlerQuery(limit=100, after=after, **spec)
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            page = await svc.list_handlers(query)
            samples.append(time.perf_counter() - started)
            assert len(page.handlers) == 100, (name, len(page.handlers))
        results[name] = statistics.median(samples) * 1000
    await svc.stop()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--postgres", action="store_true", help="also measure on PostgreSQL")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as scratch, durable_postgres(enabled=args.postgres) as pg:
        backends = {"sqlite": lambda n: f"sqlite+aiosqlite:///{scratch}/list{n}.db"}
        if args.postgres:
            backends["postgres"] = lambda n: pg.create_database()
        for backend, url_for in backends.items():
            table = {n: await timings(url_for(n), n, args.repeat) for n in sizes}
            print(f"\n{backend}: ms per page of 100 (median of {args.repeat})")
            print(f"  {'query':<14}" + "".join(f"{n:>12,}" for n in sizes) + "   ratio")
            for name in QUERIES:
                cells = "".join(f"{table[n][name]:>12.2f}" for n in sizes)
                ratio = table[sizes[-1]][name] / table[sizes[0]][name]
                verdict = "ok" if ratio <= 2 else "ABOVE 2x"
                print(f"  {name:<14}{cells}   {ratio:5.2f}x {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
