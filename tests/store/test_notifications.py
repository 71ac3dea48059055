"""``store.notifications``: in-process wakeups after committed writes."""

from __future__ import annotations

import logging
from collections.abc import Collection

import pytest

from llama_workflows_asgi.store import MemoryWorkflowStore, SqliteWorkflowStore
from llama_workflows_asgi.store.notifications import TOPICS, Notice, Notifications
from tests.support.factories import T0, event, handler, progress

Heard = list[tuple[Notice, list[str]]]


def recorder(into: Heard) -> object:
    def listen(notice: Notice, keys: Collection[str]) -> None:
        into.append((notice, sorted(keys)))

    return listen


def test_every_listener_hears_every_wakeup_until_it_unsubscribes() -> None:
    hub = Notifications()
    first: Heard = []
    second: Heard = []
    stop_first = hub.subscribe(recorder(first))  # type: ignore[arg-type]
    hub.subscribe(recorder(second))  # type: ignore[arg-type]
    hub.published("wake", ["h1", "h2"])
    stop_first()
    stop_first()  # twice is harmless
    hub.published("events", {"run-1"})
    assert first == [("wake", ["h1", "h2"])]
    assert second == [("wake", ["h1", "h2"]), ("events", ["run-1"])]


def test_a_write_without_keys_wakes_nobody_but_a_reconnect_wakes_everyone() -> None:
    hub = Notifications()
    heard: Heard = []
    hub.subscribe(recorder(heard))  # type: ignore[arg-type]
    hub.published("free", [])
    assert heard == []
    hub.deliver("all", [])
    assert heard == [("all", [])]


def test_a_failing_listener_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Notifications()
    heard: Heard = []

    def broken(notice: Notice, keys: Collection[str]) -> None:
        raise RuntimeError("listener bug")

    hub.subscribe(broken)
    hub.subscribe(recorder(heard))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, "llama_workflows_asgi.store.notifications"):
        hub.published("wake", ["h"])
    assert heard == [("wake", ["h"])]
    assert "a wakeup listener failed" in caplog.text


def test_a_listener_may_unsubscribe_while_it_is_called() -> None:
    hub = Notifications()
    heard: Heard = []
    stops = []

    def once(notice: Notice, keys: Collection[str]) -> None:
        heard.append((notice, sorted(keys)))
        stops[0]()

    stops.append(hub.subscribe(once))
    hub.published("wake", ["a"])
    hub.published("wake", ["b"])
    assert heard == [("wake", ["a"])]


async def test_in_process_delivery_needs_no_connection() -> None:
    hub = Notifications()
    assert hub.remote is False
    await hub.start()
    await hub.start()
    await hub.close()
    assert TOPICS == ("wake", "events", "free")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_stores_writes_are_announced_on_its_topics(kind: str, tmp_path: object) -> None:
    store = MemoryWorkflowStore() if kind == "memory" else SqliteWorkflowStore(f"{tmp_path}/n.db")
    await store.start()
    heard: Heard = []
    store.notifications.subscribe(recorder(heard))  # type: ignore[arg-type]
    try:
        row = handler("h", owner_id="me")
        await store.create_handler(row)
        await store.save_progress([progress(row, events=[event(0)])])
        await store.enqueue_event("h", "run-h", "{}", None, T0)
        await store.release_handlers("me", ["h"])
        await store.release_handlers("me", None)
    finally:
        await store.close()
    assert heard == [
        ("events", ["run-h"]),
        ("wake", ["h"]),
        ("free", ["h"]),
        ("free", ["*"]),
    ]
