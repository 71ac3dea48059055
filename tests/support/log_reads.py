"""Which runs' event logs a store is asked for, for tests that streams read from memory."""

from __future__ import annotations

from typing import Any

import pytest

from llama_workflows_asgi.store import AbstractWorkflowStore


def count_log_reads(store: AbstractWorkflowStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run ids ``store``'s event-log reads ask for from now on, in order, repeats kept.

    The reads still go to the store (``read_events`` and ``read_new_events``
    are wrapped, not replaced).
    """
    asked: list[str] = []
    read_events, read_new_events = store.read_events, store.read_new_events

    async def counted(run_id: str, **options: Any) -> Any:
        asked.append(run_id)
        return await read_events(run_id, **options)

    async def counted_new(positions: dict[str, int], **options: Any) -> Any:
        asked.extend(positions)
        return await read_new_events(positions, **options)

    monkeypatch.setattr(store, "read_events", counted)
    monkeypatch.setattr(store, "read_new_events", counted_new)
    return asked
