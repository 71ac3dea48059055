"""Benchmark another checkout's package under this checkout's benchmarks (``--code``).

A child started with ``python -m`` has its working directory first on
``sys.path``, ahead of ``PYTHONPATH``: started from this checkout, it imports
this checkout's package whatever ``PYTHONPATH`` says. So the child starts in
a scratch directory holding only the other checkout's package: a directory of
links to its modules, plus ``migrations`` linked to the checkout's Alembic
scripts (which live beside the package, at the repository's root, and which an
editable install would otherwise map to the installed checkout's).
``benchmarks`` (the apps and the workloads, the same for both sides of a
comparison) still comes from this checkout, through ``PYTHONPATH``. The child
checks that it imported the package and the migrations it was given (see
:func:`check_package`), so a comparison cannot measure one checkout twice
without saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "llama_workflows_asgi"
_EXPECTED = "BENCH_CHECKOUT"


class Checkout:
    """Where a benchmark child runs, and its environment: this checkout, or another's package."""

    def __init__(self, code: str | None = None) -> None:
        self.root = (Path(code) if code else ROOT).resolve()
        package = self.root / PACKAGE
        if not package.is_dir():
            raise SystemExit(f"no {PACKAGE} package in {self.root}")
        self._scratch: str | None = None
        self.cwd = str(ROOT)
        if code is not None:
            self._scratch = self.cwd = tempfile.mkdtemp(prefix="bench-checkout-")
            _link_package(package, self.root / "migrations", Path(self._scratch) / PACKAGE)

    def popen(self, command: list[str], extra: dict[str, str] | None = None) -> dict[str, Any]:
        """``subprocess`` keyword arguments running ``command`` as a child of this checkout.

        Its environment has ``extra``, finds ``benchmarks`` in the benchmark's own checkout
        and names the checkout :func:`check_package` expects.
        """
        env = {**os.environ, **(extra or {}), "PYTHONPATH": str(ROOT), _EXPECTED: str(self.root)}
        return {"args": command, "env": env, "cwd": self.cwd}

    def close(self) -> None:
        """Remove the scratch directory (the other checkout is left as it is)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def _link_package(package: Path, migrations: Path, into: Path) -> None:
    into.mkdir()
    for entry in package.iterdir():
        if entry.name != "__pycache__":
            os.symlink(entry, into / entry.name)
    if migrations.is_dir() and not (into / "migrations").exists():
        os.symlink(migrations, into / "migrations")


def check_package() -> None:
    """In a child: stop unless the package and its migrations are the given checkout's."""
    expected = os.environ.get(_EXPECTED)
    if expected is None:
        return
    import llama_workflows_asgi
    from llama_workflows_asgi.store.migrate import script_directory

    root = Path(expected)
    imported = Path(llama_workflows_asgi.__file__).resolve().parent
    scripts = Path(script_directory()).resolve()
    if imported != root / PACKAGE or not scripts.is_relative_to(root):
        raise SystemExit(
            f"benchmark child imported {imported} (migrations {scripts}), expected {root}"
        )


def run(command: list[str], checkout: Checkout) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to the end as a child of ``checkout``; its stderr told if it fails."""
    done = subprocess.run(**checkout.popen(command), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed ({done.returncode}):\n{done.stderr}")
    return done
