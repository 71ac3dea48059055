"""A run killed with SIGKILL and resumed by another uvicorn process keeps its trace and tags."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import ServerProcess, read_journal, server_processes
from tests.support.span_file import read_spans

pytestmark = pytest.mark.timeout(120)


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def stored_trace_context(db: Path, handler_id: str) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        (start_event,) = conn.execute(
            "SELECT start_event FROM workflow_handlers WHERE handler_id = ?", (handler_id,)
        ).fetchone()
    context: dict[str, str] = json.loads(start_event)["trace_context"]
    return context


def run_spans(spans: list[dict[str, Any]], handler_id: str) -> list[dict[str, Any]]:
    return [
        s
        for s in spans
        if s["name"].startswith("workflow ")
        and s["attributes"].get("workflow.handler_id") == handler_id
    ]


async def test_a_resumed_run_links_to_its_trace_and_its_steps_keep_the_tags(
    tmp_path: Path,
) -> None:
    db, journal, span_file = tmp_path / "crash.db", tmp_path / "journal.tsv", tmp_path / "spans"
    env = {
        "WF_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "WF_JOURNAL": str(journal),
        "WF_SPAN_FILE": str(span_file),
    }
    first, second = ServerProcess("first", env, tmp_path), ServerProcess("second", env, tmp_path)
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    with server_processes(first, second):
        await asyncio.to_thread(first.start)
        async with httpx.AsyncClient(base_url=first.url, timeout=30) as http:
            started = await http.post(
                "/workflows/processing/run-nowait",
                json={"start_event": {"name": "t", "items": ["a1", "a2", "a3"], "delay": 0.3}},
                headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
            )
        assert started.status_code == 200, started.text
        handler_id, run_id = started.json()["handler_id"], started.json()["run_id"]
        begins = lambda: [line for line in read_journal(journal) if line.action == "begin"]  # noqa: E731
        await wait_until(lambda: len(begins()) == 2, "the second item")
        assert first.process is not None
        first_pid = first.process.pid
        first.kill()

        await asyncio.to_thread(second.start)
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
            status = ""
            deadline = time.monotonic() + 30
            while status != "completed" and time.monotonic() < deadline:
                status = (await http.get(f"/handlers/{handler_id}")).json()["status"]
                await asyncio.sleep(0.05)
        assert status == "completed"
        await wait_until(lambda: len(run_spans(read_spans(span_file), handler_id)) == 1, "span")

    spans = read_spans(span_file)
    # The first process exported its request span (continuing the caller's
    # trace); its run span never ended: the process was killed.
    (request,) = [
        s
        for s in spans
        if s["process"] == "first" and s["kind"] == "SERVER" and "run-nowait" in s["name"]
    ]
    assert (request["trace_id"], request["parent_span_id"]) == (trace_id, caller_span)
    assert [s for s in spans if s["process"] == "first" and s["name"].startswith("workflow ")] == []

    # The second process's run span is an adoption, linked to the original run span.
    (resumed,) = run_spans(spans, handler_id)
    assert resumed["process"] == "second"
    assert resumed["attributes"]["workflow.run_id"] == run_id
    assert resumed["attributes"]["workflow.status"] == "completed"
    (event,) = resumed["events"]
    assert event["name"] == "workflow.adopted"
    assert event["attributes"]["workflow.resume.attempt"] == 1
    # Owner ids are host:pid:token: the run was taken from the killed process.
    assert event["attributes"]["workflow.previous_owner"].split(":")[1] == str(first_pid)
    original = stored_trace_context(db, handler_id)["traceparent"].split("-")
    assert original[1] == trace_id
    (link,) = resumed["links"]
    assert (link["trace_id"], link["span_id"]) == (trace_id, original[2])
    steps = [s for s in spans if s["name"] == "step process_items" and s["process"] == "second"]
    assert [s["parent_span_id"] for s in steps] == [resumed["span_id"]]

    assert f"run {run_id} adopted" in second.log(), "an adoption is logged as a warning"

    # Every step execution, before and after the crash, ran with the run's tags.
    tags = [(line.process, line.detail) for line in read_journal(journal) if line.action == "tags"]
    assert {process for process, _ in tags} == {"first", "second"}
    assert {detail for _, detail in tags} == {f"{handler_id},{run_id}"}
