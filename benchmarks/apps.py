"""ASGI apps of every benchmarked server, chosen by ``BENCH_TARGET``.

``uvicorn --factory benchmarks.apps:create_app`` with:

* ``BENCH_TARGET``: ``memory``, ``sqlite``, ``postgres`` (this package) or
  ``reference`` (``llama-agents-server`` 0.8.0 with its SQLite store);
* ``BENCH_DATABASE``: the SQLite file or PostgreSQL URL.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.workloads import workflows


def create_app() -> Any:
    target = os.environ["BENCH_TARGET"]
    if target == "reference":
        return _reference_app(os.environ["BENCH_DATABASE"])
    from llama_workflows_asgi import (
        MemoryWorkflowStore,
        ServiceConfig,
        SqlAlchemyWorkflowStore,
        WorkflowServer,
    )

    store = (
        MemoryWorkflowStore()
        if target == "memory"
        else SqlAlchemyWorkflowStore(_url(target, os.environ["BENCH_DATABASE"]), migrate=True)
    )
    delay = float(os.environ.get("BENCH_CHECKPOINT_DELAY", "0"))
    server = WorkflowServer(store, config=ServiceConfig(checkpoint_delay=delay))
    for name, workflow in workflows().items():
        server.add_workflow(name, workflow)
    return server.app


def _url(target: str, database: str) -> str:
    return f"sqlite+aiosqlite:///{database}" if target == "sqlite" else database


def _reference_app(db_path: str) -> Any:
    from llama_agents.server import SqliteWorkflowStore
    from llama_agents.server import WorkflowServer as ReferenceServer

    server = ReferenceServer(workflow_store=SqliteWorkflowStore(db_path=db_path))
    for name, workflow in workflows().items():
        server.add_workflow(name, workflow)
    return server.app
