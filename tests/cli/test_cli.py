"""``cli``: the ``llama-workflows-asgi`` entry point, and the command line against a live server.

Each command's own cases are in its twin (``test_runs``, ``test_migrate``,
``test_serve``, ``test_common``, ``test_app``); here ``main`` itself, the
installed script, and a ``serve`` process picking up what ``runs`` wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llama_workflows_asgi.cli import main
from tests.support.cli import cli
from tests.support.processes import ROOT, free_port

pytestmark = pytest.mark.timeout(120)


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "llama-workflows-asgi"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "runs" in result.stdout


def test_main_without_typer_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As if the [cli] extra were not installed: importing the Typer app fails.
    monkeypatch.setitem(sys.modules, "llama_workflows_asgi.cli._app", None)
    with pytest.raises(SystemExit) as raised:
        main()
    assert raised.value.code == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: the command line needs Typer (")
    assert "pip install 'llama_workflows_asgi[cli]'" in stderr


def test_main_runs_the_application(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["llama-workflows-asgi", "migrate", "--help"])
    with pytest.raises(SystemExit) as raised:
        main()
    assert raised.value.code == 0
    assert "Create or upgrade the workflow tables." in capsys.readouterr().out


# -- serve -------------------------------------------------------------------------------


@pytest.fixture
def served(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """``serve tests.support.cli_app:workflows`` on PostgreSQL, in its own process.

    (One database is enough here: what is tested is how a server process
    picks up what the command line wrote, the same on both.)
    """
    db, port = postgres_url, free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "llama_workflows_asgi", "serve"]
    command += ["tests.support.cli_app:workflows", "--db", db, "--port", str(port)]
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, url, tmp_path / "serve.log")
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the served app did not become healthy:\n{log.read_text()}")


def test_cancel_and_retry_runs_live_in_a_server(served: str, postgres_url: str) -> None:
    db = postgres_url
    with httpx.Client(base_url=served, timeout=30) as http:
        slow = http.post("/workflows/slow/run-nowait", json={"start_event": {"seconds": 60}})
        slow_id = slow.json()["handler_id"]
        assert cli("runs", "cancel", slow_id, db=db).returncode == 0
        # The owner stops it: its stream ends with the cancellation.
        stream = http.get(f"/events/{slow_id}", params={"sse": "false", "after_sequence": "-1"})
        assert json.loads(stream.text.splitlines()[-1])["type"] == "WorkflowCancelledEvent"
        assert http.get(f"/handlers/{slow_id}").json()["status"] == "cancelled"

        failed = http.post("/workflows/five/run", json={}).json()
        assert failed["status"] == "failed"
        assert cli("runs", "retry", failed["handler_id"], db=db).returncode == 0
        # The server claims the reopened run at its next ownership round.
        stream = http.get(
            f"/events/{failed['handler_id']}", params={"sse": "false", "after_sequence": "-1"}
        )
        events = [json.loads(line) for line in stream.text.splitlines()]
        steps = [e["value"]["step"] for e in events if e["type"] == "Note"]
        assert steps == ["s1", "s2", "s3", "s3", "s4", "s5"]
        assert events[-1]["type"] == "StopEvent"
        assert http.get(f"/handlers/{failed['handler_id']}").json()["status"] == "completed"
