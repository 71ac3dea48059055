"""``freeze_startup_heap``: the heap alive after startup, frozen once per process.

Each test runs in a fresh interpreter: freezing is process-wide and happens once,
so the test process itself would remember an earlier test's freeze.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from tests.support.processes import ROOT


def in_fresh_process(code: str) -> Any:
    """Run ``code`` in a new interpreter; what it prints last, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_freezes_what_is_alive_once_and_the_collector_still_works() -> None:
    seen = in_fresh_process(
        """
        import gc, json, weakref
        from llama_workflows_asgi._heap import freeze_startup_heap

        class Node:
            pass

        kept = [Node()]
        before = gc.get_freeze_count()
        first = freeze_startup_heap()
        frozen = gc.get_freeze_count()
        kept_visible = any(o is kept for o in gc.get_objects())
        second = freeze_startup_heap()
        cycle = Node(); cycle.me = cycle; watched = weakref.ref(cycle); del cycle
        gc.collect()
        print(json.dumps([before, first, frozen, kept_visible, second,
                          gc.get_freeze_count() == frozen, watched() is None]))
        """
    )
    before, first, frozen, kept_visible, second, unchanged, cycle_freed = seen
    assert before == 0
    assert first is True
    assert frozen > 1000
    assert kept_visible is False  # the collector no longer visits what was alive
    assert second is False  # once per process
    assert unchanged is True
    assert cycle_freed is True  # garbage made after the freeze is still collected


LIFESPAN = """
    import asyncio, gc, json
    from fastapi import FastAPI
    from llama_workflows_asgi import WorkflowServer, workflow_router

    async def frozen_after_startup(app):
        async with app.router.lifespan_context(app):
            return gc.get_freeze_count() > 0

    def host(**options):
        app = FastAPI()
        app.include_router(workflow_router(**options))
        return app

    print(json.dumps(asyncio.run(frozen_after_startup({app}))))
"""


def test_a_router_freezes_only_when_asked() -> None:
    assert in_fresh_process(LIFESPAN.format(app="host()")) is False
    assert in_fresh_process(LIFESPAN.format(app="host(freeze_heap=True)")) is True


def test_a_workflow_server_freezes_by_default() -> None:
    assert in_fresh_process(LIFESPAN.format(app="WorkflowServer().app")) is True
    assert in_fresh_process(LIFESPAN.format(app="WorkflowServer(freeze_heap=False).app")) is False
