"""The startup heap, frozen once per process so that full collections skip it.

Most of a serving process's objects are made at startup and live as long as it
does: modules, classes, functions, the app and its routes, the engine's and
SQLAlchemy's caches. CPython's full collections walk all of them, over and over,
while runs come and go; with this package's imports the walk is a sizeable share
of a short run's CPU (``docs/benchmarks.md``, eighth round). ``gc.freeze()``
moves every object alive at that moment to a permanent generation the collector
no longer visits. Reference counting still frees them; a cycle among them that
becomes garbage later is never collected, nor what it references (Python's
documentation of ``gc.freeze``). So it is done once, after startup, and only
where the process's owner asks: ``workflow_router(freeze_heap=True)``, or a
``WorkflowServer`` this package serves (``serve()``, the ``serve`` command).
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_heap() -> bool:
    """Collect, then freeze every object alive, the first time in this process.

    Returns whether this call froze the heap (``False``: it already was).
    """
    global _frozen
    if _frozen:
        return False
    _frozen = True
    gc.collect()
    gc.freeze()
    return True
