"""Without the OpenTelemetry API nothing changes: runs work, tags are set, nothing is imported.

Recent FastAPI releases depend on ``opentelemetry-api`` themselves, so the
interpreter here refuses every ``opentelemetry`` import and loads the run
service without the package's HTTP layer (bypassing its ``__init__``), as a
deployment on an older FastAPI without the API would run it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import llama_workflows_asgi

pytestmark = pytest.mark.timeout(120)

# Run in a fresh interpreter whose import system refuses every `opentelemetry`
# module, as if the package were not installed.
SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, types
    from importlib.abc import MetaPathFinder
    from pathlib import Path

    class NoOpenTelemetry(MetaPathFinder):
        refused = []
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                self.refused.append(name)
                raise ImportError(f"No module named {name!r}")
            return None

    blocker = NoOpenTelemetry()
    sys.meta_path.insert(0, blocker)

    # The package without its __init__ (which imports FastAPI).
    package = types.ModuleType("llama_workflows_asgi")
    package.__path__ = [str(Path(PACKAGE_DIR))]
    sys.modules["llama_workflows_asgi"] = package

    from llama_workflows_asgi.service.service import WorkflowService
    from llama_workflows_asgi.store.memory import MemoryWorkflowStore
    from workflows import Workflow, step
    from workflows.events import Event, StartEvent, StopEvent
    from llama_index_instrumentation.dispatcher import active_instrument_tags

    def step_tags():
        tags = active_instrument_tags.get()
        return {
            "handler_id": tags.get("llamaindex.handler_id"),
            "run_id": tags.get("llamaindex.run_id"),
        }

    class Middle(Event):
        tags: dict

    class TaggedWorkflow(Workflow):
        @step
        async def first(self, ev: StartEvent) -> Middle:
            return Middle(tags=step_tags())

        @step
        async def second(self, ev: Middle) -> StopEvent:
            return StopEvent(result={"tags": [ev.tags, step_tags()]})

    async def main():
        service = WorkflowService(MemoryWorkflowStore())
        service.add_workflow("tagged", TaggedWorkflow())
        async with service.running_context():
            done = await service.run("tagged")
            stream = await service.open_stream(done.handler_id, after=-1)
            async for _ in stream or []:
                pass
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        print(json.dumps({
            "status": done.status,
            "tags": done.result.result["tags"],
            "handler_id": done.handler_id,
            "run_id": done.run_id,
            "enabled": service.telemetry.enabled,
            "loaded": loaded,
            "refused": blocker.refused,
        }))

    asyncio.run(main())
    """
)


def test_runs_work_with_tags_and_nothing_imported_without_the_api() -> None:
    package_dir = Path(llama_workflows_asgi.__file__).parent
    script = SCRIPT.replace("PACKAGE_DIR", repr(str(package_dir)))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=100, check=False
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["status"] == "completed"
    expected = {"handler_id": report["handler_id"], "run_id": report["run_id"]}
    assert report["tags"] == [expected, expected]
    assert report["enabled"] is False
    assert report["loaded"] == []
    assert "opentelemetry" in report["refused"], "the library did look for the API"
