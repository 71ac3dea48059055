"""The example programs in ``examples/`` run as real processes, exactly as a user runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "server"

SEED_HOST = "localhost"
SEED_PORT = 8000
SEED_URL = f"http://{SEED_HOST}:{SEED_PORT}"
"""Where the seed's programs serve and connect: hard-coded in them, as in the document."""


def _environment() -> dict[str, str]:
    # The repository's package, whatever is installed; unbuffered so logs are complete.
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def require_free_seed_port() -> None:
    """Fail (not skip) the test if something already uses the seed's port."""
    problem = None
    try:
        with socket.create_connection((SEED_HOST, SEED_PORT), timeout=0.5):
            problem = "something accepts connections there"
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        try:
            sock.bind(("127.0.0.1", SEED_PORT))
        except OSError as exc:
            problem = str(exc)
    if problem is not None:
        pytest.fail(
            f"port {SEED_PORT} is taken ({problem}); the seed's examples serve on "
            f"{SEED_URL} as written: stop whatever uses it and rerun",
            pytrace=False,
        )


@dataclass
class ExampleServer:
    """``python examples/server/<script>`` started in ``cwd`` (where its database lands)."""

    script: str
    cwd: Path
    name: str = "server"
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.cwd / f"{self.name}.log"

    def start(self, timeout: float = 30.0) -> ExampleServer:
        """Start the program and return once ``/health`` answers 200."""
        require_free_seed_port()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / self.script)],
            cwd=self.cwd,
            env=_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None:
                pytest.fail(f"{self.script} exited at startup:\n{self.log()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"{self.script} did not become healthy:\n{self.log()}", pytrace=False)
            time.sleep(0.05)
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{SEED_URL}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def interrupt(self, timeout: float = 20.0) -> float:
        """Ctrl+C (SIGINT) and wait for the process to exit; return how long it took."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.script} ignored Ctrl+C for {timeout}s:\n{self.log()}")
        return time.monotonic() - started

    def stop(self) -> None:
        """Make sure the process is gone (SIGKILL if it still runs)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def run_example_client(script: str, cwd: Path, timeout: float = 30.0) -> str:
    """Run a client program to completion; return its stdout (fails on a non-zero exit)."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def start_example_client(script: str, cwd: Path) -> subprocess.Popen[str]:
    """Start a client program; its stdout is a pipe read line by line as it prints."""
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / script)],
        cwd=cwd,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
