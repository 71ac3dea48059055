"""Benchmark another checkout's package under this checkout's benchmarks (``--code``).

A child started with ``python -m`` has its working directory first on
``sys.path``, ahead of ``PYTHONPATH``: started from this checkout, it imports
this checkout's package whatever ``PYTHONPATH`` says. So the child starts in
a scratch directory holding only a link to the other checkout's package: that
package comes first, and ``benchmarks`` (the apps and the workloads, the same
for both sides of a comparison) still comes from this checkout, through
``PYTHONPATH``. The child checks it imported what it was given (see
:func:`check_package`), so a comparison can never silently measure one
checkout twice.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "llama_workflows_asgi"
_EXPECTED = "BENCH_PACKAGE_DIR"


class Checkout:
    """Where a benchmark child runs, and its environment: this checkout, or another's package."""

    def __init__(self, code: str | None = None) -> None:
        self._scratch: str | None = None
        package = (Path(code) if code else ROOT).resolve() / PACKAGE
        if not package.is_dir():
            raise SystemExit(f"no {PACKAGE} package in {code}")
        if code is None:
            self.cwd = str(ROOT)
        else:
            self._scratch = self.cwd = tempfile.mkdtemp(prefix="bench-checkout-")
            os.symlink(package, Path(self._scratch) / PACKAGE)
        self.package = package

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The child's environment: ``benchmarks`` found here, the package checked on import."""
        return {
            **os.environ,
            **(extra or {}),
            "PYTHONPATH": str(ROOT),
            _EXPECTED: str(self.package),
        }

    def close(self) -> None:
        """Remove the scratch directory (the other checkout is left as it is)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def check_package() -> None:
    """In a child: stop unless the package imported is the one its parent asked for."""
    expected = os.environ.get(_EXPECTED)
    if expected is None:
        return
    import llama_workflows_asgi

    imported = Path(llama_workflows_asgi.__file__).resolve().parent
    if imported != Path(expected):
        raise SystemExit(f"benchmark child imported {imported}, expected {expected}")
