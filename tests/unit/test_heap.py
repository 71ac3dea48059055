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


def test_collects_then_freezes_what_is_alive_once_and_the_collector_still_works() -> None:
    seen = in_fresh_process(
        """
        import gc, json, weakref
        from llama_workflows_asgi._heap import freeze_startup_heap

        class Node:
            pass

        gc.disable()  # the garbage below waits for the call's own collection
        kept = [Node()]
        old = Node(); old.me = old; old_ref = weakref.ref(old); del old
        before = gc.get_freeze_count()
        first = freeze_startup_heap()
        frozen = gc.get_freeze_count()
        gc.enable()
        kept_visible = any(o is kept for o in gc.get_objects())
        second = freeze_startup_heap()
        new = Node(); new.me = new; new_ref = weakref.ref(new); del new
        gc.collect()
        print(json.dumps({
            "before": before, "first": first, "frozen": frozen, "kept_visible": kept_visible,
            "old_freed": old_ref() is None, "second": second,
            "unchanged": gc.get_freeze_count() <= frozen, "new_freed": new_ref() is None,
        }))
        """
    )
    assert seen["before"] == 0
    assert seen["first"] is True
    assert seen["frozen"] > 1000
    assert seen["old_freed"] is True  # collected first, not frozen as garbage
    assert seen["kept_visible"] is False  # the collector no longer visits what was alive
    assert seen["second"] is False  # once per process
    assert seen["unchanged"] is True  # nothing more frozen (reference counting may free some)
    assert seen["new_freed"] is True  # garbage made after the freeze is still collected


LIFESPANS = """
    import asyncio, gc, json
    from fastapi import FastAPI
    from llama_workflows_asgi import WorkflowServer, workflow_router

    def host(**options):
        app = FastAPI()
        app.include_router(workflow_router(**options))
        return app

    async def frozen_after_startup(app):
        async with app.router.lifespan_context(app):
            return gc.get_freeze_count()

    async def main():
        seen = []
        for make in CASES:
            app = make()
            seen.append(gc.get_freeze_count())  # built, not started
            seen.append(await frozen_after_startup(app))
        return seen
"""


def lifespans(cases: str) -> Any:
    """Objects frozen before and after each case's lifespan, the cases in one process."""
    return in_fresh_process(
        LIFESPANS + f"\n    CASES = {cases}\n    print(json.dumps(asyncio.run(main())))\n"
    )


def test_a_router_freezes_only_when_asked_once_started_and_once_per_process() -> None:
    seen = lifespans(
        "[lambda: host(), lambda: host(freeze_heap=True), lambda: host(freeze_heap=True)]"
    )
    assert seen[:3] == [0, 0, 0]  # off by default; built, not started: nothing yet
    assert seen[3] > 1000
    # A second router does not freeze again: what it and its lifespan made stays
    # out (frozen objects freed by reference counting leave the count).
    assert seen[5] <= seen[4] <= seen[3]


def test_the_freeze_runs_before_the_first_ownership_round() -> None:
    seen = in_fresh_process(
        """
        import asyncio, json
        from llama_workflows_asgi import workflow_router
        from llama_workflows_asgi import router as router_module

        router = workflow_router(freeze_heap=True)
        service = router.service
        marks = []
        original = router_module.freeze_startup_heap

        def watched():
            marks.append([service._lifecycle.running, service._supervisor.first_round.is_set()])
            return original()

        router_module.freeze_startup_heap = watched

        async def main():
            async with router.lifespan_context(None):
                await service._supervisor.first_round.wait()

        asyncio.run(main())
        print(json.dumps(marks))
        """
    )
    assert seen == [[True, False]]  # started, and no run adopted yet


def test_a_workflow_server_freezes_when_served_by_the_package() -> None:
    seen = lifespans(
        "[lambda: WorkflowServer().app, lambda: WorkflowServer(freeze_heap=False).served_app(),"
        " lambda: WorkflowServer().served_app()]"
    )
    assert seen[:5] == [0, 0, 0, 0, 0]
    assert seen[5] > 1000


def test_a_workflow_server_told_to_freezes_its_app_wherever_it_runs() -> None:
    seen = lifespans("[lambda: WorkflowServer(freeze_heap=True).app]")
    assert seen[0] == 0
    assert seen[1] > 1000


def test_serve_freezes_the_process_it_serves_in() -> None:
    seen = in_fresh_process(
        """
        import asyncio, gc, json, os, signal, time
        from llama_workflows_asgi import WorkflowServer

        async def main():
            server = WorkflowServer()
            serving = asyncio.create_task(server.serve("127.0.0.1", 0, log_level="warning"))
            deadline = time.monotonic() + 60
            while gc.get_freeze_count() == 0 and not serving.done():
                assert time.monotonic() < deadline, "never frozen"
                await asyncio.sleep(0.02)
            frozen = gc.get_freeze_count()
            os.kill(os.getpid(), signal.SIGINT)  # serve() stops gracefully and returns
            await serving
            return frozen

        print(json.dumps(asyncio.run(main())))
        """
    )
    assert seen > 1000
