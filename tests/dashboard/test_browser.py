"""The dashboard in headless Chromium against a real uvicorn host, behind auth, under a prefix.

Every page is checked after its test (see ``conftest.page``): no request left
the host, no console error or page error, no Content-Security-Policy violation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, Route, expect
from playwright.sync_api import Error as PlaywrightError

from tests.dashboard.conftest import (
    DashboardHost,
    Watch,
    check_clean,
    open_context,
    watch_page,
)
from tests.dashboard.host_app import PREFIX

CSP = "default-src 'self'"


def row(page: Page, handler_id: str) -> Locator:
    """The runs table's row of ``handler_id``."""
    return page.locator(f'tr[data-handler-id="{handler_id}"]')


def wait_until(page: Page, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the page's events arrive until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        page.wait_for_timeout(20)


def test_without_credentials_everything_is_refused(host: DashboardHost, browser: Browser) -> None:
    for path in ("/ui", "/ui/assets/dashboard.js", "/ui/assets/dashboard.css", "/handlers"):
        assert httpx.get(host.origin + PREFIX + path).status_code == 401, path
    context = browser.new_context()
    try:
        response = context.new_page().goto(host.ui)
        assert response is not None
        assert response.status == 401
    finally:
        context.close()


def test_page_and_assets_carry_a_strict_policy(host: DashboardHost) -> None:
    page = host.api.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith(CSP)
    assert "http" not in page.text  # no absolute URL: everything is relative to the prefix
    script = host.api.get("/ui/assets/dashboard.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["content-security-policy"].startswith(CSP)
    for name in ("nope.js", "..%2F__init__.py", "index.html", "%2e%2e%2fdashboard.js"):
        response = host.api.get(f"/ui/assets/{name}")
        assert response.status_code == 404, name
        assert response.json() == {"detail": "Not Found"}


def test_runs_of_every_status_listed_and_updated_live(
    page: Page, host: DashboardHost, screenshots: Path
) -> None:
    completed = host.start("greet", {"name": "Ada"})
    failed = host.start("fail")
    waiting = host.start("hitl")
    cancelled = host.start("paused")
    running = host.start("paused")
    host.wait_status(completed, "completed")
    host.wait_status(failed, "failed")
    assert host.api.post(f"/handlers/{cancelled}/cancel").status_code == 200

    page.goto(host.ui)
    for handler_id, status in [
        (completed, "completed"),
        (failed, "failed"),
        (waiting, "running"),
        (cancelled, "cancelled"),
        (running, "running"),
    ]:
        expect(row(page, handler_id).get_by_text(status, exact=True)).to_be_visible()
    # Newest first.
    ids = page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.handlerId)")
    assert ids.index(running) < ids.index(cancelled) < ids.index(completed)
    expect(row(page, completed).locator("td").nth(2)).to_have_text("greet")

    # A run started elsewhere shows up without a reload, and its status follows.
    later = host.start("ticket", {"title": "printer on fire"})
    expect(row(page, later)).to_be_visible(timeout=4_000)
    expect(row(page, later).get_by_text("completed", exact=True)).to_be_visible(timeout=4_000)
    host.api.post(f"/handlers/{running}/cancel")
    expect(row(page, running).get_by_text("cancelled", exact=True)).to_be_visible(timeout=4_000)
    page.screenshot(path=screenshots / "dashboard-runs.png")


def test_filters_by_status_and_workflow(page: Page, host: DashboardHost) -> None:
    failed = host.start("fail")
    completed = host.start("greet")
    host.wait_status(failed, "failed")
    host.wait_status(completed, "completed")
    page.goto(host.ui)
    expect(row(page, completed)).to_be_visible()

    page.get_by_label("Status").select_option("failed")
    expect(row(page, completed)).to_have_count(0)
    expect(row(page, failed)).to_be_visible()
    statuses = page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.status)")
    assert set(statuses) == {"failed"}

    page.get_by_label("Status").select_option("")
    page.get_by_label("Workflow", exact=True).select_option("greet")
    expect(row(page, failed)).to_have_count(0)
    expect(row(page, completed)).to_be_visible()
    names = page.locator("tbody tr td:nth-child(3)").all_inner_texts()
    assert set(names) == {"greet"}


def test_pages_through_runs_with_the_api_cursor(page: Page, host: DashboardHost) -> None:
    started = [host.start("greet", {"name": f"n{i}"}) for i in range(23)]
    page.goto(host.ui)
    page.get_by_label("Workflow", exact=True).select_option("greet")
    expect(row(page, started[-1])).to_be_visible()
    first = page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.handlerId)")
    assert len(first) == 20
    assert first[:20] == started[::-1][:20]

    page.get_by_role("button", name="Older").click()
    expect(page.get_by_text("Page 2")).to_be_visible()
    expect(row(page, started[2])).to_be_visible()
    second = page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.handlerId)")
    assert not set(first) & set(second)
    assert second[:3] == started[2::-1]

    page.get_by_role("button", name="Newer").click()
    expect(row(page, started[-1])).to_be_visible()
    expect(page.get_by_role("button", name="Newer")).to_be_disabled()


def test_start_form_is_built_from_the_start_event_schema(
    page: Page, host: DashboardHost, screenshots: Path
) -> None:
    page.goto(host.ui)
    page.get_by_role("link", name="Start ticket").click()
    expect(page.get_by_label("title", exact=True)).to_be_visible()
    expect(page.get_by_label("priority")).to_have_value("2")
    page.get_by_label("title", exact=True).fill("disk full")
    page.get_by_label("priority").fill("1")
    page.get_by_label("urgent").check()
    page.screenshot(path=screenshots / "dashboard-start.png")
    page.get_by_role("button", name="Start run").click()

    expect(page).to_have_url(re.compile(r"#/runs/\w+$"))
    handler_id = page.url.rsplit("/", 1)[1]
    expect(page.locator(".run-head").get_by_text("completed")).to_be_visible()
    expect(page.locator(".result")).to_contain_text('"queue": "p1"')
    result = host.handler(handler_id)["result"]["value"]["result"]
    assert result == {"title": "disk full", "queue": "p1"}
    # The branch taken is marked on the graph, the other is not.
    ran = re.compile(r"\bran\b")
    expect(page.locator('[data-node="triage"]')).to_have_class(ran)
    expect(page.locator('[data-node="page_on_call"]')).to_have_class(ran)
    expect(page.locator('[data-node="enqueue"]')).not_to_have_class(ran)
    page.screenshot(path=screenshots / "dashboard-run-branches.png", full_page=True)


def test_start_event_without_fields_takes_additional_ones(page: Page, host: DashboardHost) -> None:
    page.goto(host.ui + "#/start")
    page.get_by_label("Workflow", exact=True).select_option("greet")
    expect(page.get_by_text("StartEvent declares no fields.")).to_be_visible()
    page.get_by_label("Additional fields").fill('{"name": "Ada"}')
    page.get_by_role("button", name="Start run").click()
    expect(page.locator(".result")).to_contain_text('"greeting": "Hello, Ada!"')


def test_start_form_reports_bad_input(page: Page, host: DashboardHost, watch: Watch) -> None:
    watch.expect_error("status of 400 (Bad Request)")  # the browser logs the refused POST
    page.goto(host.ui + "#/start/ticket")
    page.get_by_label("Additional fields").fill("[1, 2]")
    page.get_by_label("title", exact=True).fill("x")
    page.get_by_role("button", name="Start run").click()
    expect(page.get_by_role("alert")).to_have_text("Additional fields must be a JSON object")
    page.get_by_label("Additional fields").fill('{"priority": "high"}')
    page.get_by_label("priority").fill("")
    page.get_by_role("button", name="Start run").click()
    # The server's own validation message comes back in the form.
    expect(page.get_by_role("alert")).to_contain_text("Invalid start_event")


def test_answering_a_waiting_run_through_the_form_completes_it(
    page: Page, host: DashboardHost, screenshots: Path
) -> None:
    handler_id = host.start("hitl")
    page.goto(f"{host.ui}#/runs/{handler_id}")
    expect(page.locator(".run-head").get_by_text("waiting for input")).to_be_visible()
    expect(page.locator(".asked")).to_contain_text("what is your name?")
    expect(page.locator('[data-node="ask"]')).to_have_class(re.compile(r"\bran\b"))
    expect(page.locator('[data-node="done"]')).not_to_have_class(re.compile(r"\bran\b"))
    # Only the event the workflow waits for is offered (not its start, stop or question).
    expect(page.locator(".send-form h3")).to_have_text(["AnswerEvent"])
    page.screenshot(path=screenshots / "dashboard-run.png", full_page=True)

    page.get_by_label("answer").fill("Ada")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".run-head").get_by_text("completed")).to_be_visible()
    expect(page.locator(".result")).to_have_text('"got Ada"')
    expect(page.locator('[data-node="done"]')).to_have_class(re.compile(r"\bran\b"))
    expect(page.get_by_role("img", name=re.compile("ran: ask, done"))).to_be_visible()
    expect(page.locator(".timeline [data-type=StopEvent]")).to_have_count(1)
    assert host.handler(handler_id)["status"] == "completed"
    page.screenshot(path=screenshots / "dashboard-run-done.png", full_page=True)


def test_cancel_asks_first_then_cancels(page: Page, host: DashboardHost) -> None:
    handler_id = host.start("paused")
    page.goto(f"{host.ui}#/runs/{handler_id}")
    cancel = page.get_by_role("button", name="Cancel")
    messages: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    cancel.click()
    assert messages
    assert handler_id in messages[0]
    assert host.handler(handler_id)["status"] == "running"

    page.once("dialog", lambda dialog: dialog.accept())
    cancel.click()
    expect(page.locator(".run-head").get_by_text("cancelled")).to_be_visible()
    assert host.handler(handler_id)["status"] == "cancelled"
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.get_by_role("button", name="Purge")).to_be_visible()


def test_purge_deletes_a_finished_run(page: Page, host: DashboardHost) -> None:
    handler_id = host.start("fail")
    host.wait_status(handler_id, "failed")
    page.goto(f"{host.ui}#/runs/{handler_id}")
    expect(page.locator(".error-text")).to_have_text("kaboom")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Purge").click()
    expect(page).to_have_url(re.compile(r"#/$"))
    assert host.api.get(f"/handlers/{handler_id}").status_code == 404
    expect(row(page, handler_id)).to_have_count(0)


def test_retry_takes_a_failed_run_on_from_its_checkpoint(page: Page, host: DashboardHost) -> None:
    handler_id = host.start("flaky", {"ticket": "T-1"})
    host.wait_status(handler_id, "failed")
    page.goto(f"{host.ui}#/runs/{handler_id}")
    expect(page.locator(".error-text")).to_have_text("the ticket system is down")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".run-head").get_by_text("completed")).to_be_visible()
    assert host.handler(handler_id)["result"]["value"]["result"] == "filed T-1"
    # The timeline followed the retried run to its new final event.
    expect(page.locator(".timeline [data-type=StopEvent]")).to_have_count(1)
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)


def test_timeline_resumes_with_last_event_id_after_a_dropped_stream(
    page: Page, host: DashboardHost
) -> None:
    handler_id = host.start("greet", {"name": "Bo"})
    host.wait_status(handler_id, "completed")
    cut: list[str] = []

    def cut_first_stream(route: Route) -> None:
        if cut:
            route.continue_()
            return
        # Deliver the first two frames, then drop the connection.
        body = route.fetch().text()
        frames = [frame for frame in body.split("\n\n") if frame.startswith("id:")]
        cut.extend(frames[:2])
        route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream"},
            body="retry: 200\n\n" + "\n\n".join(frames[:2]) + "\n\n",
        )

    page.route(f"**{PREFIX}/events/{handler_id}?*", cut_first_stream)
    page.goto(f"{host.ui}#/runs/{handler_id}")
    page.get_by_label("Show internal events").check()
    expect(page.locator(".timeline [data-type=StopEvent]")).to_have_count(1)
    # The first request (fetched for the cut) had no cursor; the browser then
    # reconnected on its own, resuming after the last frame it got.
    received = host.api.get(host.origin + "/test/stream-requests").json()
    mine = [r["last_event_id"] for r in received if r["path"].endswith(f"/events/{handler_id}")]
    assert mine == [None, cut[-1].split("\n")[0].removeprefix("id:").strip()]
    sequences = page.locator(".timeline .seq").all_inner_texts()
    assert sequences == [f"#{n}" for n in range(len(sequences))]  # each event once, in order


def test_keyboard_only_reaches_a_run(page: Page, host: DashboardHost) -> None:
    handler_id = host.start("greet")
    host.wait_status(handler_id, "completed")
    page.goto(host.ui)
    expect(row(page, handler_id)).to_be_visible()
    link = row(page, handler_id).get_by_role("link", name=handler_id)
    for _ in range(60):
        page.keyboard.press("Tab")
        if link.evaluate("el => el === document.activeElement"):
            break
    else:
        raise AssertionError("the run's link is not reachable with Tab")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"#/runs/{handler_id}$"))
    expect(page.locator(".run-head")).to_contain_text(handler_id)


def test_phone_width(browser: Browser, host: DashboardHost, screenshots: Path) -> None:
    waiting = host.start("hitl")
    # A phone in dark mode: the page follows the system's colour scheme.
    context = open_context(
        browser, host, viewport={"width": 390, "height": 844}, color_scheme="dark"
    )
    page, watch = watch_page(context, host)
    try:
        page.goto(host.ui)
        expect(row(page, waiting)).to_be_visible()
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 18, 22)"
        expect(row(page, waiting).get_by_text("running", exact=True)).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=screenshots / "dashboard-phone.png")
        page.goto(f"{host.ui}#/runs/{waiting}")
        expect(page.get_by_label("answer")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.get_by_label("answer").fill("Zed")
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".result")).to_have_text('"got Zed"')
        page.screenshot(path=screenshots / "dashboard-phone-run.png", full_page=True)
        check_clean(page, watch)
    finally:
        context.close()


def test_api_lists_one_handler_by_id(host: DashboardHost) -> None:
    first, second = host.start("greet"), host.start("greet")
    body = host.api.get("/handlers", params={"handler_id": second}).json()
    assert [h["handler_id"] for h in body["handlers"]] == [second]
    both = host.api.get("/handlers", params=[("handler_id", first), ("handler_id", second)])
    assert {h["handler_id"] for h in both.json()["handlers"]} == {first, second}
    assert host.api.get("/handlers", params={"handler_id": "missing"}).json()["handlers"] == []


def test_the_page_checks_would_catch_errors_and_foreign_requests(
    page: Page, host: DashboardHost, watch: Watch
) -> None:
    page.goto(host.ui)
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    page.evaluate("console.error('boom')")
    page.evaluate("setTimeout(() => { throw new Error('thrown'); })")
    # The page's own policy stops a script from calling elsewhere...
    page.evaluate("fetch('http://example.invalid/x').catch(() => null)")
    wait_until(page, lambda: len(page.evaluate("window.__cspViolations")) == 1)
    assert page.evaluate("window.__cspViolations") == ["connect-src http://example.invalid/x"]
    # ...and the route check stops (and records) any request that gets past it.
    other = page.context.new_page()
    with pytest.raises(PlaywrightError):
        other.goto("http://example.invalid/elsewhere")
    other.close()
    wait_until(page, lambda: any("thrown" in error for error in watch.errors))
    assert "console: boom" in watch.errors
    assert watch.foreign() == ["http://example.invalid/elsewhere"]
    # Leave the page clean for the fixture's own check.
    watch.errors.clear()
    watch.requests.remove("http://example.invalid/elsewhere")
    page.evaluate("window.__cspViolations = []")


def test_a_missing_run_says_so(page: Page, host: DashboardHost) -> None:
    page.goto(f"{host.ui}#/runs/no-such-run")
    expect(page.get_by_role("heading", name="Run not found")).to_be_visible()
    page.get_by_role("link", name="All runs").click()
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()


def test_event_data_is_shown_as_text_never_as_markup(page: Page, host: DashboardHost) -> None:
    markup = "<img src=x id=injected>"
    handler_id = host.start("greet", {"name": markup})
    host.wait_status(handler_id, "completed")
    page.goto(f"{host.ui}#/runs/{handler_id}")
    expect(page.locator(".result")).to_contain_text(markup)
    expect(page.locator(".timeline [data-type=StopEvent]")).to_contain_text(markup)
    expect(page.locator("#injected")).to_have_count(0)


def test_live_updates_keep_the_keyboard_focus(page: Page, host: DashboardHost) -> None:
    handler_id = host.start("paused")
    page.goto(host.ui)
    link = row(page, handler_id).get_by_role("link", name=handler_id)
    link.focus()
    host.api.post(f"/handlers/{handler_id}/cancel")
    newer = host.start("greet")
    expect(row(page, handler_id).get_by_text("cancelled", exact=True)).to_be_visible()
    expect(row(page, newer)).to_be_visible()
    expect(row(page, handler_id).get_by_role("link", name=handler_id)).to_be_focused()
