"""``cli._runs``: ``runs list``, ``show``, ``cancel``, ``retry`` and ``prune``."""

from __future__ import annotations

import asyncio

import pytest

from llama_workflows_asgi.cli._runs import handler_dict
from tests.support.cli import as_json, cli, invoke, listed, rows
from tests.support.factories import handler

pytestmark = pytest.mark.timeout(120)


def test_runs_list_filters_and_pages(seeded: str) -> None:
    newest_first = ["live", "failed-new", "done-0", "done-1", "done-2", "done-3", "done-old"]
    assert listed(cli("runs", "list", "--json", db=seeded)) == newest_first
    assert listed(invoke("runs", "list", "--json", "--status", "failed", db=seeded)) == [
        "failed-new"
    ]
    assert listed(invoke("runs", "list", "--json", "-w", "slow", "-w", "five", db=seeded)) == [
        "live",
        "failed-new",
    ]
    assert listed(invoke("runs", "list", "--json", "--older-than", "30d", db=seeded)) == [
        "done-old"
    ]
    window = ["--newer-than", "3h30m", "--older-than", "30m", "--json"]
    assert listed(invoke("runs", "list", *window, db=seeded)) == ["failed-new", "done-0", "done-1"]
    assert listed(invoke("runs", "list", *window, "--order", "asc", db=seeded)) == [
        "done-1",
        "done-0",
        "failed-new",
    ]

    pages, cursor = [], None
    while True:
        extra = [] if cursor is None else ["--cursor", cursor]
        page = as_json(invoke("runs", "list", "--json", "--limit", "3", *extra, db=seeded))
        pages.append([h["handler_id"] for h in page["handlers"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:]]

    table = invoke("runs", "list", "--limit", "2", db=seeded)
    assert table.returncode == 0
    assert "failed-new" in table.stdout
    assert "more: --cursor" in table.stdout
    assert invoke("runs", "list", "--status", "lost", db=seeded).returncode == 2
    assert invoke("runs", "list", "--cursor", "not-a-cursor", db=seeded).returncode == 2


def test_runs_show(seeded: str) -> None:
    shown = as_json(cli("runs", "show", "failed-new", "--events", "2", "--json", db=seeded))
    assert (shown["status"], shown["error"]) == ("failed", "boom in s3\nsecond line")
    assert [e["sequence"] for e in shown["events"]] == [1, 2]
    assert "ctx" not in shown
    table = invoke("runs", "show", "failed-new", db=seeded)
    assert table.returncode == 0
    assert "second line" in table.stdout
    assert "run-failed-new" in table.stdout
    missing = invoke("runs", "show", "nope", db=seeded)
    assert (missing.returncode, missing.stderr.strip()) == (5, "error: Handler 'nope' not found")


def test_runs_cancel_retry_and_prune(seeded: str) -> None:
    assert as_json(cli("runs", "cancel", "live", "--json", db=seeded))["status"] == "cancelled"
    again = invoke("runs", "cancel", "live", db=seeded)
    assert (again.returncode, "already cancelled" in again.stderr) == (6, True)

    retried = as_json(cli("runs", "retry", "failed-new", "--json", db=seeded))
    assert (retried["status"], retried["error"], retried["owner_id"]) == ("running", None, None)
    refused = invoke("runs", "retry", "done-old", db=seeded)
    assert (refused.returncode, "only failed runs" in refused.stderr) == (6, True)
    assert invoke("runs", "retry", "nope", db=seeded).returncode == 5

    dry = as_json(invoke("runs", "prune", "--older-than", "30d", "--dry-run", "--json", db=seeded))
    assert dry["count"] == 1
    assert "done-old" in asyncio.run(rows(seeded))
    pruned = cli("runs", "prune", "--older-than", "1d", "-s", "completed", db=seeded)
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted 1 runs" in pruned.stdout
    after = asyncio.run(rows(seeded))
    assert set(after) == {"live", "failed-new", "done-0", "done-1", "done-2", "done-3"}
    assert after["live"].status == "cancelled"
    assert invoke("runs", "prune", "--older-than", "1d", "-s", "running", db=seeded).returncode == 2
    assert invoke("runs", "prune", "--older-than", "soon", db=seeded).returncode == 2


# -- on one database: the finer points of each command ------------------------------------


def test_json_output_leaves_out_the_checkpoint_and_fingerprint() -> None:
    row = handler("h", ctx={"state": {}}, request_hash="abc")
    shown = handler_dict(row)
    assert "ctx" not in shown
    assert "request_hash" not in shown
    assert (shown["handler_id"], shown["started_at"]) == ("h", "2024-05-06T07:08:09.123456Z")


def test_list_refuses_an_unknown_order(sqlite_db: str) -> None:
    refused = invoke("runs", "list", "--order", "sideways", db=sqlite_db)
    assert (refused.returncode, "order must be asc or desc" in refused.stderr) == (2, True)


def test_show_without_events(sqlite_db: str) -> None:
    shown = as_json(invoke("runs", "show", "done-0", "--events", "0", "--json", db=sqlite_db))
    assert (shown["status"], shown["events"]) == ("completed", [])


def test_actions_say_what_they_did(sqlite_db: str) -> None:
    cancelled = invoke("runs", "cancel", "live", db=sqlite_db)
    assert (cancelled.returncode, cancelled.stdout.strip()) == (0, "live (slow): cancelled")
    retried = invoke("runs", "retry", "failed-new", db=sqlite_db)
    assert retried.stdout.strip() == "failed-new (five): back to running"
    dry = invoke("runs", "prune", "--older-than", "30d", "--dry-run", db=sqlite_db)
    assert dry.stdout.strip() == "would delete 1 runs (completed, failed, cancelled) older than 30d"
    assert "done-old" in asyncio.run(rows(sqlite_db))
