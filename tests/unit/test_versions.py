"""Workflow versions: the default fingerprint and explicit versions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from workflows import Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi import MemoryWorkflowStore, WorkflowService
from llama_workflows_asgi.registry import WorkflowRegistry
from llama_workflows_asgi.versions import check_version, fingerprint
from tests.support.crash_app import TickerWorkflow

REPO = Path(__file__).resolve().parents[2]


class Middle(Event):
    n: int


class TwoSteps(Workflow):
    @step
    async def first(self, ev: StartEvent) -> Middle:
        return Middle(n=1)

    @step
    async def second(self, ev: Middle) -> StopEvent:
        return StopEvent(result=ev.n)


class TwoStepsOtherBody(Workflow):
    @step
    async def first(self, ev: StartEvent) -> Middle:
        return Middle(n=2)  # another body, same shape

    @step
    async def second(self, ev: Middle) -> StopEvent:
        return StopEvent(result=ev.n * 10)


class Renamed(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> Middle:
        return Middle(n=1)

    @step
    async def second(self, ev: Middle) -> StopEvent:
        return StopEvent(result=ev.n)


def test_the_fingerprint_names_steps_and_event_types() -> None:
    version = fingerprint(TwoSteps())
    assert version.startswith("fp-")
    assert len(version) == 19
    assert fingerprint(TwoSteps()) == version
    assert fingerprint(TwoStepsOtherBody()) == version  # only the shape counts
    assert fingerprint(Renamed()) != version


def test_the_fingerprint_is_the_same_in_other_processes_and_hash_seeds() -> None:
    code = (
        "from tests.support.crash_app import TickerWorkflow;"
        "from llama_workflows_asgi.versions import fingerprint;"
        "print(fingerprint(TickerWorkflow()))"
    )
    seen = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", code],
            env=env, cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        seen.add(out.stdout.strip())
    assert seen == {fingerprint(TickerWorkflow())}


def test_explicit_versions_are_checked_and_recorded() -> None:
    registry = WorkflowRegistry()
    assert registry.add("a", TwoSteps(), version="2024.06-b").version == "2024.06-b"
    assert registry.add("b", TwoSteps()).version == fingerprint(TwoSteps())
    assert registry.versions() == {"a": ["2024.06-b"], "b": [fingerprint(TwoSteps())]}
    for bad in ("", "has space", "x" * 65, "slash/y"):
        with pytest.raises(ValueError, match="Invalid workflow version"):
            check_version(bad)
    service = WorkflowService(MemoryWorkflowStore())
    with pytest.raises(ValueError, match="Invalid workflow version"):
        service.add_workflow("c", TwoSteps(), version="no good")
    service.add_workflow("c", TwoSteps(), version="v7")  # the refused instance was not taken


async def test_each_run_records_its_version() -> None:
    service = WorkflowService(MemoryWorkflowStore())
    service.add_workflow("two", TwoSteps(), version="v7")
    async with service.running_context():
        done = await service.run("two")
        page = await service.list_page(versions=["v7"])
        none = await service.list_page(versions=["v8"])
    assert done.version == "v7"
    assert [h.handler_id for h in page.handlers] == [done.handler_id]
    assert none.handlers == []
