"""``python -m llama_workflows_asgi``: the command line, as a module."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import ROOT


def test_python_dash_m_runs_the_command_line() -> None:
    command = [sys.executable, "-m", "llama_workflows_asgi", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "Usage: python -m llama_workflows_asgi" in result.stdout
    for command_name in ("serve", "migrate", "runs"):
        assert command_name in result.stdout
