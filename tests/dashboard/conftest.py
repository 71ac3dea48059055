"""One dashboard host in uvicorn and one headless Chromium per test module.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it); without it
the browser tests fail with a message saying so, they are never skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    expect,
    sync_playwright,
)

from tests.dashboard.host_app import COOKIE, PREFIX, TOKEN
from tests.support.processes import ROOT, free_port

AUTH = {"Authorization": f"Bearer {TOKEN}"}

# A loaded CI machine may be slow to paint; assertions that measure say so with their own timeout.
expect.set_options(timeout=10_000)


def chromium_path() -> str:
    """Where Debian's Chromium is; fails the test run when it is missing."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail(
            "Chromium is not installed: the dashboard tests need Debian's chromium package "
            "(apt-get install -y chromium)",
            pytrace=False,
        )
    return path


@dataclass
class DashboardHost:
    """The host app in a uvicorn process, and an authenticated API client for it."""

    origin: str
    api: httpx.Client

    @property
    def ui(self) -> str:
        return f"{self.origin}{PREFIX}/ui"

    def start(self, workflow: str, start_event: Any = None) -> str:
        body = {} if start_event is None else {"start_event": start_event}
        response = self.api.post(f"/workflows/{workflow}/run-nowait", json=body)
        assert response.status_code == 200, response.text
        handler_id: str = response.json()["handler_id"]
        return handler_id

    def handler(self, handler_id: str) -> dict[str, Any]:
        response = self.api.get(f"/handlers/{handler_id}")
        assert response.status_code in (200, 202, 500), response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_status(self, handler_id: str, status: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.handler(handler_id)["status"] != status:
            assert time.monotonic() < deadline, f"{handler_id} never became {status}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardHost]:
    """The host app served by a real uvicorn process for the whole module."""
    directory = tmp_path_factory.mktemp("dashboard-host")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WF_DATABASE_URL": f"sqlite+aiosqlite:///{directory / 'runs.db'}",
    }
    log = open(directory / "server.log", "ab")  # noqa: SIM115 - owned by the child
    command = [sys.executable, "-m", "uvicorn", "--factory", "tests.dashboard.host_app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
    origin = f"http://127.0.0.1:{port}"
    api = httpx.Client(base_url=origin + PREFIX, headers=AUTH, timeout=10)
    try:
        _wait_healthy(process, api, directory / "server.log")
        yield DashboardHost(origin, api)
    finally:
        api.close()
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def _wait_healthy(process: subprocess.Popen[bytes], api: httpx.Client, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the host exited at startup:\n{log.read_text()}")
        try:
            if api.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"the host never became healthy:\n{log.read_text()}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium driven by Playwright."""
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests write screenshots (``DASHBOARD_SCREENSHOTS`` to choose)."""
    chosen = os.environ.get("DASHBOARD_SCREENSHOTS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("dashboard-screenshots")


@dataclass
class Watch:
    """What a page did: every request it made, console errors, page errors, CSP reports."""

    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def expect_error(self, text: str) -> None:
        """Allow console errors containing ``text`` (a test that provokes one)."""
        self.expected.append(text)

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(text in e for text in self.expected)]

    def on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def foreign(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(self.origin + "/")]


CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


def open_context(browser: Browser, host: DashboardHost, **options: Any) -> BrowserContext:
    """A browser context logged in to the host with its login cookie."""
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 800}, **options})
    context.add_cookies([{"name": COOKIE, "value": TOKEN, "url": host.origin}])
    return context


def watch_page(context: BrowserContext, host: DashboardHost) -> tuple[Page, Watch]:
    """A new page whose requests stay on the host (others are aborted and recorded)."""
    watch = Watch(host.origin)
    context.on("request", watch.on_request)
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(host.origin + "/")
            else route.abort("blockedbyclient")
        ),
    )
    context.add_init_script(CSP_PROBE)
    page = context.new_page()
    page.on("console", watch.on_console)
    page.on("pageerror", lambda error: watch.errors.append(f"pageerror: {error}"))
    return page, watch


def check_clean(page: Page, watch: Watch) -> None:
    """Nothing left the host, nothing was logged as an error, CSP blocked nothing."""
    assert watch.requests, "the page made no request at all"
    assert watch.foreign() == []
    assert watch.unexpected_errors() == []
    violations = page.evaluate("window.__cspViolations")
    assert violations == []


@pytest.fixture
def watched(browser: Browser, host: DashboardHost) -> Iterator[tuple[Page, Watch]]:
    """A logged-in desktop page, checked for foreign requests and errors after the test."""
    context = open_context(browser, host)
    tab, watch = watch_page(context, host)
    tab.set_default_timeout(10_000)
    try:
        yield tab, watch
        check_clean(tab, watch)
    finally:
        context.close()


@pytest.fixture
def page(watched: tuple[Page, Watch]) -> Page:
    """The page of ``watched``."""
    return watched[0]


@pytest.fixture
def watch(watched: tuple[Page, Watch]) -> Watch:
    """What the page of ``watched`` did."""
    return watched[1]
