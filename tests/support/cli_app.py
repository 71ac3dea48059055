"""Serve targets for the command line's tests (``serve tests.support.cli_app:...``)."""

from __future__ import annotations

from fastapi import FastAPI

from llama_workflows_asgi import MemoryWorkflowStore, WorkflowServer
from tests.support.flaky import FiveSteps
from tests.support.workflows import GreetWorkflow, SlowWorkflow

workflows = {"five": FiveSteps(), "slow": SlowWorkflow(timeout=None)}
"""A dict of workflows: served on the command line's --db."""

server = WorkflowServer(MemoryWorkflowStore())
server.add_workflow("greet", GreetWorkflow())

app = FastAPI()
app.include_router(server.router, prefix="/wf")

not_servable = 42
