"""A benchmark child runs the package of the checkout it was given, or refuses to run."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.checkout import ROOT, Checkout
from benchmarks.run import Server

_WHICH = "import llama_workflows_asgi; print(llama_workflows_asgi.__file__)"
_CHECK = "from benchmarks.checkout import check_package; check_package(); print('checked')"


def _child(checkout: Checkout, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    kwargs = checkout.popen([sys.executable, "-c", code])
    kwargs["env"].update(env)
    return subprocess.run(**kwargs, capture_output=True, text=True, timeout=60)


def _other_checkout(tmp_path: Path) -> Path:
    """A stand-in checkout: a package that says where its migrations are, and the migrations."""
    root = tmp_path / "other"
    (root / "llama_workflows_asgi" / "store").mkdir(parents=True)
    (root / "llama_workflows_asgi" / "__init__.py").write_text("")
    (root / "llama_workflows_asgi" / "store" / "__init__.py").write_text("")
    (root / "llama_workflows_asgi" / "store" / "migrate.py").write_text(
        "import importlib.util\n\n"
        "def script_directory():\n"
        "    spec = importlib.util.find_spec('llama_workflows_asgi.migrations')\n"
        "    return next(iter(spec.submodule_search_locations))\n"
    )
    (root / "migrations").mkdir()
    (root / "migrations" / "__init__.py").write_text("")
    return root


def test_a_child_imports_the_package_of_the_checkout_it_was_given(tmp_path: Path) -> None:
    other = _other_checkout(tmp_path)
    checkout = Checkout(str(other))
    try:
        imported = Path(_child(checkout, _WHICH).stdout.strip()).resolve()
        assert imported == other / "llama_workflows_asgi" / "__init__.py"
        assert _child(checkout, _CHECK).stdout.strip() == "checked"
    finally:
        checkout.close()
    assert not Path(checkout.cwd).exists()


def test_without_another_checkout_a_child_imports_this_one() -> None:
    checkout = Checkout()
    imported = Path(_child(checkout, _WHICH).stdout.strip()).resolve()
    assert imported == ROOT / "llama_workflows_asgi" / "__init__.py"


def test_a_child_given_another_package_than_it_imports_stops(tmp_path: Path) -> None:
    checkout = Checkout()  # imports this checkout's package...
    done = _child(checkout, _CHECK, BENCH_CHECKOUT=str(_other_checkout(tmp_path)))
    assert done.returncode != 0  # ...while told to expect the other's
    assert "expected" in done.stderr
    assert "checked" not in done.stdout


def test_a_server_of_another_checkout_runs_that_checkouts_package_and_migrations(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "llama_workflows_asgi", other / "llama_workflows_asgi", ignore=ignore)
    shutil.copytree(ROOT / "migrations", other / "migrations", ignore=ignore)
    # The child refuses to start unless it imported the copy and found the copy's migrations.
    server = Server("sqlite", str(tmp_path / "runs.db"), str(other))
    try:
        asyncio.run(server.ready())
    finally:
        server.stop()
