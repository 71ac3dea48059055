"""CPU of the store's own PostgreSQL work, per batch and per read, without the run service.

    python -m benchmarks.pg_batch_cost [--runs 16] [--events 1] [--rounds 20]

On a throwaway durable PostgreSQL (``benchmarks.postgres``), prints the
process CPU time of: a progress batch of ``--runs`` running handlers with
``--events`` events each (one held connection, as the group commit writes
it), a create batch of ``--runs`` new handlers, and one ``store.query`` of a
handler by id. Medians of ``--rounds`` rounds. CPU time moves less than wall
time on a shared machine; compare two trees by running this in each, back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable

from benchmarks.postgres import durable_postgres
from llama_workflows_asgi.store import HandlerQuery, SqlAlchemyWorkflowStore, _create, _progress
from llama_workflows_asgi.store._pg_writer import HeldConnectionWriter
from tests.support.factories import event, handler, progress


async def cpu_per_call(call: Callable[[], Awaitable[object]], rounds: int, calls: int) -> float:
    """Median process CPU microseconds of one ``call()``, over ``rounds`` rounds."""
    for _ in range(calls):
        await call()  # warm-up: statements prepared, caches filled
    spent = []
    for _ in range(rounds):
        began = time.process_time()
        for _ in range(calls):
            await call()
        spent.append((time.process_time() - began) * 1e6 / calls)
    return statistics.median(spent)


async def measure(url: str, runs: int, events: int, rounds: int) -> None:
    store = SqlAlchemyWorkflowStore(url)
    await store.start()
    writer = HeldConnectionWriter(store.write_engine)
    running = [handler(f"h{i}", owner_id="me") for i in range(runs)]
    for row in running:
        await store.create_handler(row)
    sequences, names = itertools.count(step=events), itertools.count()

    async def progress_batch() -> None:
        first = next(sequences)
        items = [
            progress(row, events=[event(first + k) for k in range(events)], ctx="{}")
            for row in running
        ]
        await writer(lambda conn: _progress.save_run_progress(conn, items))

    async def create_batch() -> None:
        ops = [_create.Create(handler(f"n{next(names)}", owner_id="me"), None) for _ in range(runs)]
        await writer(lambda conn: _create.create_handler(conn, ops))

    query = HandlerQuery(handler_id_in=["h0"])
    try:
        print(f"progress batch ({runs} runs x {events} events): "
              f"{await cpu_per_call(progress_batch, rounds, 10):.0f} us CPU")  # fmt: skip
        print(
            f"create batch ({runs} rows): {await cpu_per_call(create_batch, rounds, 10):.0f} us CPU"
        )
        read = await cpu_per_call(lambda: store.query(query), rounds, 30)
        print(f"store.query of one handler: {read:.0f} us CPU")
    finally:
        await writer.aclose()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--events", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with durable_postgres() as server:
        asyncio.run(measure(server.create_database(), args.runs, args.events, args.rounds))


if __name__ == "__main__":
    main()
