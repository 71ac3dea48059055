"""A benchmark child runs the package of the checkout it was given, or refuses to run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.checkout import ROOT, Checkout

_WHICH = "import llama_workflows_asgi; print(llama_workflows_asgi.__file__)"
_CHECK = "from benchmarks.checkout import check_package; check_package(); print('checked')"


def _child(checkout: Checkout, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**checkout.env(), **env},
        cwd=checkout.cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _other_checkout(tmp_path: Path) -> Path:
    package = tmp_path / "other" / "llama_workflows_asgi"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    return package.parent


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
    done = _child(checkout, _CHECK, BENCH_PACKAGE_DIR=str(_other_checkout(tmp_path)))
    assert done.returncode != 0  # ...while told to expect the other's
    assert "expected" in done.stderr
    assert "checked" not in done.stdout
