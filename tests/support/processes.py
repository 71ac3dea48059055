"""Real uvicorn server processes for crash tests: start, SIGKILL, SIGTERM, restart."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """The crash app (``tests.support.crash_app``) in uvicorn, with the given environment."""

    name: str
    env: dict[str, str]
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_at: float = 0.0
    wrapper: list[str] = field(default_factory=list)
    """A command the server runs under (``unshare ...``): SIGKILL then goes to it."""
    workers: int = 1
    """``uvicorn --workers``: more than one makes this process a supervisor of workers."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start the process and wait until /health answers 200."""
        env = {**os.environ, **self.env, "WF_PROCESS": self.name, "PYTHONPATH": str(ROOT)}
        log = open(self.log_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the child
        command = [
            *self.wrapper,
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "tests.support.crash_app:create_asgi_app",
        ]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
            env["WF_WORKERS"] = str(self.workers)
        self.started_at = time.time()
        # Its own process group, so that stop() also reaches uvicorn's workers.
        self.process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
        )
        self._wait_ready(timeout)
        self.ready_at = time.time()
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at startup:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not become healthy:\n{self.log()}")

    def kill(self) -> float:
        """SIGKILL the process; return when it happened."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        killed_at = time.time()
        self.process.wait(10)
        return killed_at

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown); return the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit on its own."""
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Make sure the process and every process it started (uvicorn's workers) are gone."""
        if self.process is None:
            return
        # The group outlives a killed supervisor while its orphaned workers run.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        path = self.log_dir / f"{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def server_processes(*servers: ServerProcess) -> Iterator[tuple[ServerProcess, ...]]:
    """Stop every process at the end, whatever happened."""
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@dataclass(frozen=True)
class JournalLine:
    process: str
    run: str
    action: str
    detail: str
    at: float


def read_journal(path: Path) -> list[JournalLine]:
    """The lines the crash app's steps appended (see ``crash_app.journal``)."""
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        process, run, action, detail, at = raw.split("\t")
        lines.append(JournalLine(process, run, action, detail, float(at)))
    return lines
