"""Lint, format and type checks of the repository, with its own configuration (pyproject.toml).

The tools are those of the interpreter running the tests; a missing tool fails
the check (it is part of the ``test`` extra), it is never skipped.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.timeout(120)


def run_tool(module: str, *args: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(
            f"{module} is not installed in {sys.executable}: install the 'test' extra "
            "(pip install -e '.[test]')",
            pytrace=False,
        )
    command = [sys.executable, "-m", module, *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    shown = " ".join(command[1:])
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"`{shown}` exited with {result.returncode}:\n{output}"


def test_ruff_check() -> None:
    run_tool("ruff", "check", ".")


def test_ruff_format() -> None:
    run_tool("ruff", "format", "--check", ".")


def test_mypy_strict_on_the_package() -> None:
    run_tool("mypy")
