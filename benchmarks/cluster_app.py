"""One replica of the cluster benchmark: the package's server plus a statement counter.

``uvicorn --factory benchmarks.cluster_app:create_app`` with ``BENCH_DATABASE``
(a PostgreSQL URL), ``BENCH_POLL_INTERVAL``, ``BENCH_STREAM_POLL_INTERVAL`` and
optionally ``BENCH_ROUND_PATTERN`` (see :data:`ROUND_PATTERN`).

Every SQL statement any SQLAlchemy engine of this process sends (the store's
pool, the liveness connection, whatever a later version adds) is counted by
kind through ``after_cursor_execute``, with the rows it affected. The counters
are served, without touching the database, on ``GET /_bench/statements`` and
zeroed by ``POST /_bench/statements/reset``. Only public API is used, so the
counts follow whatever the code under test does.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from workflows import Context, Workflow, step
from workflows.events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent

from benchmarks.workloads import ChainWorkflow, EchoWorkflow

WRITES = ("insert", "update", "delete")
ROUND_PATTERN = (
    r"^\s*UPDATE\s+workflow_handlers\s+SET\s+lease_expires_at\s*="
    r"|^\s*(UPDATE|INSERT\s+INTO)\s+workflow_owners\b"
)
"""A statement sent once per ownership round (the lease renewal, or an owners-table
heartbeat): the ``rounds`` count is how many were sent."""
_DML = re.compile(r"\b(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
_TRANSACTION = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START")


def classify(statement: str) -> str:
    """The statement's kind: ``select``, ``insert``, ``update``, ``delete``,
    ``notify``, ``listen``, ``tx`` (transaction control) or ``other``."""
    text = statement.lstrip(" \t\n(")
    word = text.split(None, 1)[0].upper() if text else ""
    if word == "NOTIFY" or "pg_notify" in text.lower():
        return "notify"
    if word in ("LISTEN", "UNLISTEN"):
        return "listen"
    if word in _TRANSACTION:
        return "tx"
    if word == "WITH":  # a CTE: its main verb is the first data-changing one, if any
        found = _DML.search(text)
        return found.group(1).lower() if found else "select"
    if word in ("SELECT", "INSERT", "UPDATE", "DELETE"):
        return word.lower()
    return "other"


class StatementCounter:
    """Statements by kind (an ``executemany`` counts once), parameter sets and rows written."""

    def __init__(self, round_pattern: str = ROUND_PATTERN) -> None:
        self.round = re.compile(round_pattern, re.IGNORECASE)
        self.counts: Counter[str] = Counter()
        self.since = time.monotonic()

    def reset(self) -> None:
        self.counts.clear()
        self.since = time.monotonic()

    def after(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        kind = classify(statement)
        self.counts["statements"] += 1
        self.counts[f"s.{kind}"] += 1
        self.counts["executions"] += len(parameters) if many and parameters else 1
        self.counts["rounds"] += bool(self.round.search(statement))
        rowcount = getattr(cursor, "rowcount", -1)
        if kind in WRITES and isinstance(rowcount, int) and rowcount > 0:
            self.counts["rows_written"] += rowcount
            self.counts[f"rows.{kind}"] += rowcount
            if "workflow_owners" not in statement:  # not the heartbeat: what runs wrote
                self.counts["rows.runs"] += rowcount

    def snapshot(self) -> dict[str, float]:
        return {**self.counts, "seconds": time.monotonic() - self.since}


COUNTER = StatementCounter(os.environ.get("BENCH_ROUND_PATTERN", ROUND_PATTERN))
GAUGES: Counter[str] = Counter()
"""``waiting``: runs that asked their question here; ``dripped``: drip runs done here."""


class Question(InputRequiredEvent):
    """What a waiting run asks."""


class Answer(HumanResponseEvent):
    text: str


class WaitWorkflow(Workflow):
    """Asks a question, then waits (for hours, in real life) for the answer."""

    @step
    async def ask(self, ev: StartEvent) -> Question:
        GAUGES["waiting"] += 1
        return Question()

    @step
    async def answer(self, ev: Answer) -> StopEvent:
        return StopEvent(result=ev.text)


class Tick(Event):
    i: int


class DripWorkflow(Workflow):
    """Writes ``count`` events to the stream, one every ``interval`` seconds."""

    @step
    async def drip(self, ctx: Context, ev: StartEvent) -> StopEvent:
        count, interval = int(ev.get("count", 100)), float(ev.get("interval", 0.02))
        for i in range(count):
            await asyncio.sleep(interval)
            ctx.write_event_to_stream(Tick(i=i))
        GAUGES["dripped"] += 1
        return StopEvent(result=count)


def create_app() -> Any:
    from llama_workflows_asgi import ServiceConfig, SqlAlchemyWorkflowStore, WorkflowServer

    event.listen(Engine, "after_cursor_execute", COUNTER.after)
    config = ServiceConfig(
        poll_interval=float(os.environ.get("BENCH_POLL_INTERVAL", "1.0")),
        stream_poll_interval=float(os.environ.get("BENCH_STREAM_POLL_INTERVAL", "0.5")),
        idle_timeout=None,  # waiting runs stay live: the costly case for ownership rounds
    )
    store = SqlAlchemyWorkflowStore(os.environ["BENCH_DATABASE"], migrate=True)
    server = WorkflowServer(store, config=config)
    for name, workflow in {
        "echo": EchoWorkflow(timeout=None),
        "chain": ChainWorkflow(timeout=None),
        "wait": WaitWorkflow(timeout=None),
        "drip": DripWorkflow(timeout=None),
    }.items():
        server.add_workflow(name, workflow)
    server.app.add_api_route("/_bench/statements", _statements, methods=["GET"])
    server.app.add_api_route("/_bench/statements/reset", _reset, methods=["POST"])
    return server.app


async def _statements() -> dict[str, Any]:
    return {"counts": COUNTER.snapshot(), "gauges": dict(GAUGES), "pid": os.getpid()}


async def _reset() -> dict[str, str]:
    COUNTER.reset()
    return {"status": "reset"}
