"""``service.guard``: background loops that survive their own crashes, logged once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from llama_workflows_asgi.service.guard import FailureLog, start_guarded

pytestmark = pytest.mark.timeout(10)

logger = logging.getLogger("tests.guard")


def test_a_repeated_failure_is_logged_once_until_it_clears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = FailureLog(logger, "the loop")
    with caplog.at_level(logging.INFO, logger="tests.guard"):
        failures.failed(ValueError("down"))
        failures.failed(ValueError("down"))
        failures.failed(KeyError("other"))
        failures.cleared()
        failures.cleared()
        failures.failed(ValueError("down"))
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages == [
        ("ERROR", "the loop failed: down"),
        ("ERROR", "the loop failed: 'other'"),
        ("INFO", "the loop works again"),
        ("ERROR", "the loop failed: down"),
    ]
    assert caplog.records[0].exc_info is not None  # with its traceback


async def test_a_crashing_body_is_restarted_until_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def body() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError(f"crash {calls}")

    with caplog.at_level(logging.ERROR, logger="tests.guard"):
        task = start_guarded("flaky", body, logger)
        await asyncio.wait_for(task, 5)
    assert calls == 3
    assert task.get_name() == "flaky"
    assert [r.getMessage() for r in caplog.records] == [
        "background task flaky failed: crash 1",
        "background task flaky failed: crash 2",
    ]


async def test_cancelling_the_task_stops_the_loop() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = start_guarded("forever", forever, logger)
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
