"""The app the durability tests run in real uvicorn processes.

Configured by environment variables:

* ``WF_DATABASE_URL``: the store's URL (required).
* ``WF_PROCESS``: a name recorded by every step execution (default: the pid);
  with ``WF_WORKERS`` set (``uvicorn --workers``) each worker adds ``/<pid>``.
* ``WF_JOURNAL``: a file where steps append what they do, one line per action,
  so tests can tell which process did what and when.
* ``WF_IDLE_TIMEOUT``, ``WF_LEASE_TTL``, ``WF_POLL_INTERVAL``, ``WF_STREAM_POLL_INTERVAL``:
  service tunables; ``WF_SSE_HEARTBEAT``: the SSE heartbeat interval (default 1 s).
* ``WF_SKIP_WORKFLOWS``: comma-separated workflow names not to register.
* ``WF_MAX_LIVE_RUNS``, ``WF_MAX_QUEUED_RUNS``: capacity settings; with
  ``WF_JOURNAL_LIVE=1`` every tick also journals how many runs are live in its
  process (action ``live``).
* ``WF_TICKER_VERSION``: serve ``ticker`` at this version; its step code then
  reports that version in the run's result (``code``).
* The documented waiting patterns (``tests.support.workflows.pattern_workflows``)
  are served as ``pattern_<name>``.
* ``WF_SQLITE_MAX_PAGES``: cap the SQLite file at this many pages, so it fills
  up (SQLite then fails writes with "database or disk is full").
* ``WF_SPAN_FILE``: export every OpenTelemetry span to this file (JSON lines),
  instrument the app with the FastAPI instrumentation, and journal the
  LlamaIndex instrumentation tags each processing step runs with.
* ``WF_COUNT_STATEMENTS=1``: count the SQL statements sent (``GET /__counts``).

Besides the server's routes: ``GET /test/pid`` (which process answers) and
``GET /test/live`` (the handlers whose runs are live in this process).

Run with ``python -m uvicorn --factory tests.support.crash_app:create_asgi_app``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from llama_index_instrumentation.dispatcher import active_instrument_tags
from pydantic import BaseModel, Field
from sqlalchemy import event
from sqlalchemy.engine import Engine
from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi import ServiceConfig, SqlAlchemyWorkflowStore, WorkflowServer
from tests.support.workflows import AnswerEvent, AskEvent, FaultyWorkflow, pattern_workflows


def _process_name() -> str:
    name = os.environ.get("WF_PROCESS")
    if name is None:
        return str(os.getpid())
    # uvicorn --workers: the workers share one name, so each adds its pid.
    return f"{name}/{os.getpid()}" if os.environ.get("WF_WORKERS") else name


PROCESS = _process_name()
TICKER_VERSION = os.environ.get("WF_TICKER_VERSION")
_SERVERS: list[WorkflowServer] = []


def journal(run_id: str, action: str, detail: str = "") -> None:
    """Append ``process, run, action, detail, time`` to the journal file."""
    path = os.environ.get("WF_JOURNAL")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{PROCESS}\t{run_id}\t{action}\t{detail}\t{time.time():.6f}\n")


class ProgressEvent(Event):
    item: str
    index: int
    total: int


class ProcessInput(StartEvent):
    name: str = "processing"
    items: list[str] = Field(default_factory=lambda: ["alpha", "beta", "gamma"])
    delay: float = 0.5


class ProcessOutput(StopEvent):
    processed: list[str]


class ProcessingState(BaseModel):
    processed: list[str] = Field(default_factory=list)


def _step_tags() -> str:
    tags = active_instrument_tags.get()
    return f"{tags.get('llamaindex.handler_id')},{tags.get('llamaindex.run_id')}"


class ProcessingWorkflow(Workflow):
    """The seed's durable processing workflow, journaling each item it works on."""

    @step
    async def process_items(self, ev: ProcessInput, ctx: Context[ProcessingState]) -> ProcessOutput:
        run_id = ev.name
        state = await ctx.store.get_state()
        processed = list(state.processed)
        for i, item in enumerate(ev.items):
            result = f"processed:{item}"
            if result in processed:
                continue
            if os.environ.get("WF_SPAN_FILE"):
                journal(run_id, "tags", _step_tags())
            journal(run_id, "begin", item)
            await asyncio.sleep(ev.delay)
            journal(run_id, "end", item)
            processed.append(result)
            async with ctx.store.edit_state() as state:
                state.processed = list(processed)
            ctx.write_event_to_stream(ProgressEvent(item=result, index=i + 1, total=len(ev.items)))
        return ProcessOutput(processed=processed)


class Tick(Event):
    n: int


class TickerInput(StartEvent):
    name: str
    steps: int = 10
    delay: float = 0.2


class TickerWorkflow(Workflow):
    """A chain of ``steps`` short steps, each journaled with start and end (or interruption)."""

    @step
    async def begin(self, ev: TickerInput, ctx: Context) -> Tick:
        await ctx.store.set("name", ev.name)
        await ctx.store.set("delay", ev.delay)
        await ctx.store.set("steps", ev.steps)
        return Tick(n=0)

    @step
    async def tick(self, ev: Tick, ctx: Context) -> Tick | StopEvent:
        name = await ctx.store.get("name")
        journal(name, "start", str(ev.n))
        if os.environ.get("WF_JOURNAL_LIVE") == "1":
            journal(name, "live", str(sum(len(s.service._runs) for s in _SERVERS)))
        try:
            await asyncio.sleep(float(await ctx.store.get("delay")))
        except asyncio.CancelledError:
            journal(name, "stop", str(ev.n))  # interrupted (stop, release): it ends here
            raise
        journal(name, "stop", str(ev.n))
        if ev.n + 1 >= int(await ctx.store.get("steps")):
            result = {"name": name, "ticks": ev.n + 1, "code": TICKER_VERSION or "default"}
            return StopEvent(result=result)
        return Tick(n=ev.n + 1)


class HitlWorkflow(Workflow):
    """Asks a question and finishes with the answer (after ``WF_ANSWER_DELAY`` seconds)."""

    @step
    async def ask(self, ev: StartEvent) -> AskEvent:
        return AskEvent(question="what is your name?")

    @step
    async def done(self, ev: AnswerEvent) -> StopEvent:
        await asyncio.sleep(float(os.environ.get("WF_ANSWER_DELAY", "0")))
        return StopEvent(result=f"got {ev.answer}")


class CrashingWorkflow(Workflow):
    """Kills its own process whenever its step runs."""

    @step
    async def crash(self, ev: StartEvent) -> StopEvent:
        journal("crash", "crash")
        os._exit(3)


def _config() -> ServiceConfig:
    idle = os.environ.get("WF_IDLE_TIMEOUT")
    live, queued = os.environ.get("WF_MAX_LIVE_RUNS"), os.environ.get("WF_MAX_QUEUED_RUNS")
    return ServiceConfig(
        max_live_runs=int(live) if live else None,
        max_queued_runs=int(queued) if queued else None,
        lease_ttl=float(os.environ.get("WF_LEASE_TTL", "8")),
        poll_interval=float(os.environ.get("WF_POLL_INTERVAL", "1")),
        idle_timeout=None if idle in (None, "none") else float(idle),
        stream_poll_interval=float(os.environ.get("WF_STREAM_POLL_INTERVAL", "0.2")),
        adopt_local_dead_owners=os.environ.get("WF_LOCAL_ADOPTION", "1") == "1",
    )


def _cap_sqlite_size(pages: int) -> None:
    @event.listens_for(Engine, "connect")
    def cap(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA max_page_count = {pages}")
        cursor.close()


def create_app() -> WorkflowServer:
    """The server, with every workflow not listed in ``WF_SKIP_WORKFLOWS``."""
    if os.environ.get("WF_SQLITE_MAX_PAGES"):
        _cap_sqlite_size(int(os.environ["WF_SQLITE_MAX_PAGES"]))
    store = SqlAlchemyWorkflowStore(os.environ["WF_DATABASE_URL"], migrate=True)
    heartbeat = float(os.environ.get("WF_SSE_HEARTBEAT", "1"))
    server = WorkflowServer(store, config=_config(), sse_heartbeat_interval=heartbeat)
    _SERVERS.append(server)
    skipped = set(filter(None, os.environ.get("WF_SKIP_WORKFLOWS", "").split(",")))
    workflows: dict[str, Workflow] = {
        "processing": ProcessingWorkflow(timeout=None),
        "ticker": TickerWorkflow(timeout=None),
        "hitl": HitlWorkflow(timeout=None),
        "crashing": CrashingWorkflow(timeout=None),
        "faulty": FaultyWorkflow(timeout=None),
    }
    for name, workflow in workflows.items():
        if name not in skipped:
            version = TICKER_VERSION if name == "ticker" else None
            server.add_workflow(name, workflow, version=version)
    for name, (workflow, additional) in pattern_workflows().items():
        server.add_workflow(f"pattern_{name}", workflow, additional)
    return server


def create_asgi_app() -> Any:
    """The ASGI app (``uvicorn --factory tests.support.crash_app:create_asgi_app``)."""
    span_file = os.environ.get("WF_SPAN_FILE")
    if span_file:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        from tests.support.span_file import export_spans_to

        provider = export_spans_to(span_file)
        app = create_app().app
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
        return app
    app = create_app().app

    @app.get("/test/pid")
    async def pid() -> dict[str, int]:
        """Which worker answers on this connection (``uvicorn --workers``)."""
        return {"pid": os.getpid()}

    @app.get("/test/live")
    async def live() -> dict[str, list[str]]:
        """The handlers whose runs are live in this process (nothing public tells)."""
        return {"handlers": sorted(h for server in _SERVERS for h in server.service._runs)}

    if os.environ.get("WF_COUNT_STATEMENTS") == "1":
        _count_statements(app)
    return app


def _count_statements(app: Any) -> None:
    """Count the SQL statements the process sends; ``GET /__counts`` reports them."""
    counts = {"all": 0, "events": 0}

    @event.listens_for(Engine, "before_cursor_execute")
    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counts["all"] += 1
        if "FROM workflow_events" in statement:
            counts["events"] += 1

    app.add_api_route("/__counts", lambda: dict(counts), methods=["GET"])
