"""The store contract: every implementation behaves like MemoryWorkflowStore.

``store`` runs each test against memory, SQLite and a real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text
from workflows.events import StopEvent

from llama_workflows_asgi.api.params import decode_cursor, encode_cursor
from llama_workflows_asgi.errors import StoreUnavailableError
from llama_workflows_asgi.store import (
    AbstractWorkflowStore,
    HandlerCursor,
    HandlerExistsError,
    HandlerQuery,
    IdempotencyKeyExistsError,
    MemoryWorkflowStore,
    PersistentHandler,
    SqlAlchemyWorkflowStore,
    StoredEvent,
)
from tests.support.factories import LEASE, T0, at, event, handler, progress


async def get(store: AbstractWorkflowStore, handler_id: str) -> PersistentHandler | None:
    rows = await store.query(HandlerQuery(handler_id_in=[handler_id]))
    return rows[0] if rows else None


async def ids(store: AbstractWorkflowStore, **query: Any) -> list[str]:
    return [h.handler_id for h in await store.query(HandlerQuery(**query))]


async def orphans(store: AbstractWorkflowStore) -> tuple[int, int]:
    """Events and inbox entries that no handler row refers to."""
    if isinstance(store, MemoryWorkflowStore):
        runs = {h.run_id for h in store._handlers.values()}
        events = sum(len(log) for run, log in store._events.items() if run not in runs)
        inbox = sum(1 for e in store._inbox.values() if e.handler_id not in store._handlers)
        return events, inbox
    assert isinstance(store, SqlAlchemyWorkflowStore)
    async with store.read_engine.connect() as conn:
        events = await conn.scalar(
            text(
                "SELECT count(*) FROM workflow_events e WHERE NOT EXISTS "
                "(SELECT 1 FROM workflow_handlers h WHERE h.run_id = e.run_id)"
            )
        )
        inbox = await conn.scalar(
            text(
                "SELECT count(*) FROM workflow_inbox i WHERE NOT EXISTS "
                "(SELECT 1 FROM workflow_handlers h WHERE h.handler_id = i.handler_id)"
            )
        )
    return int(events or 0), int(inbox or 0)


# -- round trip ------------------------------------------------------------------------


async def test_round_trip_keeps_every_field_exactly(store: AbstractWorkflowStore) -> None:
    weird = {
        "text": "héllo \u4e16\u754c \U0001f600 \U0001d11e",
        "escapes": 'quote" backslash\\ nul\u0000 newline\n tab\t',
        "numbers": [0, -1, 2**53, 1.5, 1e-7],
        "nested": {"list": [True, False, None, {"deep": []}], "empty": {}},
    }
    h = handler(
        "h-1",
        run_id="r-1",
        ctx=weird,
        result=StopEvent(result={"answer": 42, "text": weird["text"]}),
        error="boom \U0001f4a5",
        started_at=datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2))),
        updated_at=at(1.000001),
        completed_at=at(2),
        start_event={"type": "StartEvent", "value": {"q": "\u00e9"}},
        principal="alice",
        idle_since=at(3),
        owner_id="owner-1",
        lease_expires_at=LEASE,
        resume_attempts=3,
        idempotency_key="key-1",
        request_hash="hash-1",
    )
    await store.create_handler(h)
    got = await get(store, "h-1")
    assert got == h
    assert got is not None
    assert got.started_at == datetime(2024, 1, 2, 1, 4, 5, 678901, tzinfo=timezone.utc)
    assert got.updated_at is not None
    assert got.updated_at.microsecond == 123457
    if store.durable:  # a database hands back UTC whatever zone it was given
        assert got.started_at.tzinfo == timezone.utc
    assert await store.get_by_idempotency_key("key-1") == h


async def test_megabyte_checkpoint_round_trips(store: AbstractWorkflowStore) -> None:
    big = {"blob": "x" * 1_000_000, "tail": ["\U0001f600"] * 100}
    h = handler("big", owner_id="o")
    await store.create_handler(h)
    assert await store.save_progress([progress(h, ctx=json.dumps(big))]) == set()
    got = await get(store, "big")
    assert got is not None
    assert got.ctx == big


async def test_load_ctx_false_skips_only_the_checkpoint(store: AbstractWorkflowStore) -> None:
    h = handler("h", ctx={"a": 1}, result={"r": 2}, principal="p")
    await store.create_handler(h)
    [listed] = await store.query(HandlerQuery(load_ctx=False))
    assert listed.ctx is None
    assert listed == h.model_copy(update={"ctx": None})


# -- creating ------------------------------------------------------------------------------


async def test_create_refuses_a_taken_id_and_keeps_the_row(store: AbstractWorkflowStore) -> None:
    await store.create_handler(handler("h", workflow_name="first"))
    with pytest.raises(HandlerExistsError):
        await store.create_handler(handler("h", workflow_name="second"))
    got = await get(store, "h")
    assert got is not None
    assert got.workflow_name == "first"


async def test_idempotency_keys_are_unique(store: AbstractWorkflowStore) -> None:
    await store.create_handler(handler("a", idempotency_key="k", request_hash="1"))
    with pytest.raises(IdempotencyKeyExistsError):
        await store.create_handler(handler("b", idempotency_key="k"))
    assert await ids(store) == ["a"]
    found = await store.get_by_idempotency_key("k")
    assert found is not None
    assert found.handler_id == "a"
    assert await store.get_by_idempotency_key("other") is None
    # A taken id is reported first, as the memory store does.
    with pytest.raises(HandlerExistsError):
        await store.create_handler(handler("a", idempotency_key="k"))


async def test_failed_create_does_not_abort_concurrent_writes(
    store: AbstractWorkflowStore,
) -> None:
    await store.create_handler(handler("taken"))
    results = await asyncio.gather(
        store.create_handler(handler("new-1")),
        store.create_handler(handler("taken")),
        store.create_handler(handler("new-2", idempotency_key="k")),
        store.create_handler(handler("new-3", idempotency_key="k")),
        store.create_handler(handler("new-4")),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == [
        "NoneType",
        "HandlerExistsError",
        "NoneType",
        "IdempotencyKeyExistsError",
        "NoneType",
    ]
    assert await ids(store) == ["new-1", "new-2", "new-4", "taken"]


async def test_replacing_a_finished_run(store: AbstractWorkflowStore) -> None:
    old = handler("h", run_id="r1", owner_id="o", idempotency_key="k")
    await store.create_handler(old)
    await store.save_progress([progress(old, events=[event(0), event(1)])])
    await store.finalize_handler("h", status="failed", error="x", event=event(0), at=at(5))
    assert await store.last_sequences(["r1"]) == {"r1": 2}

    new = handler("h", run_id="r2", idempotency_key="k", started_at=at(10))
    await store.create_handler(new, replaces_run_id="r1")
    assert await get(store, "h") == new
    assert await store.read_events("r1") == []
    assert await orphans(store) == (0, 0)


async def test_replacing_requires_the_finished_run(store: AbstractWorkflowStore) -> None:
    await store.create_handler(handler("live", run_id="r1"))
    await store.create_handler(handler("done", run_id="r1b", status="completed"))
    await store.create_handler(handler("other", run_id="r9", idempotency_key="k"))
    attempts = [
        (handler("live", run_id="r2"), "r1"),  # still running
        (handler("done", run_id="r2"), "r-stale"),  # restarted meanwhile
        (handler("missing", run_id="r2"), "r0"),
    ]
    for new, replaces in attempts:
        with pytest.raises(HandlerExistsError):
            await store.create_handler(new, replaces_run_id=replaces)
    with pytest.raises(IdempotencyKeyExistsError):
        await store.create_handler(handler("done", idempotency_key="k"), replaces_run_id="r1b")
    done = await get(store, "done")
    assert done is not None
    assert done.run_id == "r1b"
    assert done.status == "completed"
    assert await ids(store) == ["done", "live", "other"]


# -- update and delete ---------------------------------------------------------------------


async def test_update_inserts_and_replaces_rows(store: AbstractWorkflowStore) -> None:
    h = handler("h", principal="p")
    await store.update(h)
    assert await get(store, "h") == h
    changed = h.model_copy(
        update={"status": "completed", "result": StopEvent(result={"v": 1}), "ctx": {"c": 2}}
    )
    await store.update(changed)
    assert await get(store, "h") == changed


async def test_update_refuses_another_handlers_key(store: AbstractWorkflowStore) -> None:
    await store.create_handler(handler("a", idempotency_key="k"))
    await store.create_handler(handler("b"))
    with pytest.raises(IdempotencyKeyExistsError):
        await store.update(handler("b", idempotency_key="k", workflow_name="changed"))
    b = await get(store, "b")
    assert b is not None
    assert b.workflow_name == "wf"
    assert b.idempotency_key is None
    await store.update(handler("a", idempotency_key="k", workflow_name="same-row"))


async def test_update_to_another_run_drops_the_old_runs_data(store: AbstractWorkflowStore) -> None:
    h = handler("h", run_id="r1", owner_id="o")
    await store.create_handler(h)
    await store.save_progress([progress(h, events=[event(0)])])
    await store.enqueue_event("h", "r1", "{}", None, at(1))
    await store.update(handler("h", run_id="r2"))
    assert await store.read_events("r1") == []
    assert await store.read_inbox(["h"]) == []
    assert await orphans(store) == (0, 0)


async def test_delete_cascades_to_events_and_inbox(store: AbstractWorkflowStore) -> None:
    for name, status in [("a", "completed"), ("b", "running"), ("c", "running")]:
        h = handler(name, status=status, owner_id="o")
        await store.create_handler(h)
        if status == "running":
            await store.save_progress([progress(h, events=[event(0), event(1)])])
            await store.enqueue_event(name, h.run_id or "", "{}", "step", at(1))
    assert await store.delete(HandlerQuery(status_in=["running"])) == 2
    assert await ids(store) == ["a"]
    assert await store.read_events("run-b") == []
    assert await store.read_inbox(["b", "c"]) == []
    assert await orphans(store) == (0, 0)
    assert await store.delete(HandlerQuery(handler_id_in=[])) == 0
    assert await store.delete(HandlerQuery()) == 1


# -- queries -------------------------------------------------------------------------------


@pytest.fixture
async def population(store: AbstractWorkflowStore) -> AbstractWorkflowStore:
    """Seven handlers, some sharing a start time so the id breaks the tie."""
    rows = [
        handler("h1", workflow_name="a", status="running", principal="p1", started_at=at(1)),
        handler("h2", workflow_name="b", status="completed", principal=None, started_at=at(2)),
        handler("h3", workflow_name="a", status="failed", principal="p2", started_at=at(2)),
        handler("h0", workflow_name="b", status="running", principal="p1", started_at=at(2)),
        handler("h4", workflow_name="c", status="cancelled", principal=None, started_at=at(3)),
        handler("h5", workflow_name="a", status="completed", principal="p2", started_at=at(0)),
        handler("h6", workflow_name="c", status="running", principal="p1", started_at=at(3)),
    ]
    for h in rows:
        await store.create_handler(h)
    return store


ASCENDING = ["h5", "h1", "h0", "h2", "h3", "h4", "h6"]


async def test_query_orders_by_start_then_id(population: AbstractWorkflowStore) -> None:
    assert await ids(population) == ASCENDING
    assert await ids(population, descending=True) == ASCENDING[::-1]
    assert await ids(population, limit=2) == ASCENDING[:2]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"handler_id_in": ["h3", "h1", "nope"]}, ["h1", "h3"]),
        ({"workflow_name_in": ["a"]}, ["h5", "h1", "h3"]),
        ({"status_in": ["running", "cancelled"]}, ["h1", "h0", "h4", "h6"]),
        ({"principal_in": ["p2"]}, ["h5", "h3"]),
        ({"principal_in": [None]}, ["h2", "h4"]),
        ({"principal_in": [None, "p2"]}, ["h5", "h2", "h3", "h4"]),
        ({"workflow_name_in": ["a", "c"], "status_in": ["running"]}, ["h1", "h6"]),
        ({"handler_id_in": []}, []),
        ({"workflow_name_in": []}, []),
        ({"status_in": []}, []),
        ({"principal_in": []}, []),
    ],
)
async def test_query_filters(
    population: AbstractWorkflowStore, query: dict[str, Any], expected: list[str]
) -> None:
    assert await ids(population, **query) == expected
    assert await ids(population, descending=True, **query) == expected[::-1]


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("page_size", [1, 2, 3, 7])
async def test_keyset_pagination_walks_every_row_once(
    population: AbstractWorkflowStore, descending: bool, page_size: int
) -> None:
    seen: list[str] = []
    after: HandlerCursor | None = None
    while True:
        page = await population.query(
            HandlerQuery(descending=descending, after=after, limit=page_size)
        )
        if not page:
            break
        seen += [h.handler_id for h in page]
        last = page[-1]
        # Through the opaque token, as clients send it back.
        after = decode_cursor(encode_cursor(HandlerCursor(last.started_at, last.handler_id)))
    assert seen == (ASCENDING[::-1] if descending else ASCENDING)


async def test_keyset_pagination_with_filters(population: AbstractWorkflowStore) -> None:
    after = HandlerCursor(at(2), "h0")
    assert await ids(population, after=after, workflow_name_in=["a", "c"]) == ["h3", "h4", "h6"]
    assert await ids(population, after=after, descending=True) == ["h1", "h5"]
    # A cursor in another time zone means the same instant.
    shifted = HandlerCursor(at(2).astimezone(timezone(timedelta(hours=-5))), "h0")
    assert await ids(population, after=shifted) == ["h2", "h3", "h4", "h6"]


# -- progress ------------------------------------------------------------------------------


async def test_save_progress_applies_a_fenced_in_item(store: AbstractWorkflowStore) -> None:
    h = handler("h", owner_id="o", ctx={"v": 0}, lease_expires_at=LEASE, resume_attempts=2)
    await store.create_handler(h)
    first = await store.enqueue_event("h", h.run_id or "", '{"e":1}', "s", at(1))
    second = await store.enqueue_event("h", h.run_id or "", '{"e":2}', None, at(2))
    assert first is not None
    assert second is not None
    item = progress(
        h, ctx='{"v":1}', events=[event(0), event(1)], consumed_inbox=[first], idle_since=at(9)
    )
    assert await store.save_progress([item]) == set()
    got = await get(store, "h")
    assert got == h.model_copy(update={"ctx": {"v": 1}, "updated_at": at(100), "idle_since": at(9)})
    assert await store.read_events(h.run_id or "") == [event(0), event(1)]
    assert [e.id for e in await store.read_inbox(["h"])] == [second]

    # No new checkpoint: the old one stays; reset_attempts zeroes the counter.
    await store.save_progress([progress(h, events=[event(2)], reset_attempts=True)])
    got = await get(store, "h")
    assert got is not None
    assert got.ctx == {"v": 1}
    assert got.resume_attempts == 0
    assert got.idle_since is None


@pytest.mark.parametrize(
    "change",
    [
        {"owner_id": "someone-else"},
        {"owner_id": None},
        {"run_id": "another-run"},
        {"handler_id": "missing"},
    ],
)
async def test_save_progress_fences_off_a_stale_writer(
    store: AbstractWorkflowStore, change: dict[str, Any]
) -> None:
    h = handler("h", owner_id="o", ctx={"v": 0})
    await store.create_handler(h)
    entry = await store.enqueue_event("h", h.run_id or "", "{}", None, at(1))
    stale = progress(h, ctx='{"v":9}', events=[event(0)], consumed_inbox=[entry or 0])
    for name, value in change.items():
        setattr(stale, name, value)
    assert await store.save_progress([stale]) == {stale.handler_id}
    assert await get(store, "h") == h
    assert await store.read_events(h.run_id or "") == []
    assert await store.read_events(stale.run_id) == []
    assert len(await store.read_inbox(["h"])) == 1


async def test_save_progress_finishes_a_run(store: AbstractWorkflowStore) -> None:
    h = handler("h", owner_id="o", lease_expires_at=LEASE, idle_since=at(1))
    await store.create_handler(h)
    await store.enqueue_event("h", h.run_id or "", "{}", None, at(1))
    stored = (
        '{"value":{"result":{"x":1}},"qualified_name":"workflows.events.StopEvent",'
        '"type":"StopEvent","types":null}'
    )
    done = progress(h, status="completed", result=stored, events=[event(0)])
    assert await store.save_progress([done]) == set()
    got = await get(store, "h")
    assert got is not None
    assert (got.status, got.result, got.error) == ("completed", StopEvent(result={"x": 1}), None)
    assert got.result_envelope() == json.loads(stored)  # shown exactly as stored
    assert (got.completed_at, got.updated_at) == (at(100), at(100))
    assert (got.owner_id, got.lease_expires_at, got.idle_since) == (None, None, None)
    assert await store.read_inbox(["h"]) == []
    # The run is over: its former owner is now fenced off.
    assert await store.save_progress([progress(h, events=[event(1)])]) == {"h"}
    assert await store.last_sequences([h.run_id or ""]) == {h.run_id: 0}


async def test_save_progress_release_keeps_the_run_running(store: AbstractWorkflowStore) -> None:
    h = handler("h", owner_id="o", lease_expires_at=LEASE)
    await store.create_handler(h)
    await store.save_progress([progress(h, release=True, idle_since=at(7))])
    got = await get(store, "h")
    assert got is not None
    assert got.status == "running"
    assert (got.owner_id, got.lease_expires_at, got.idle_since) == (None, None, at(7))


async def test_save_progress_items_apply_in_order(store: AbstractWorkflowStore) -> None:
    a = handler("a", owner_id="o")
    b = handler("b", owner_id="o")
    await store.create_handler(a)
    await store.create_handler(b)
    batch = [
        progress(a, events=[event(0)], ctx='{"step":1}'),
        progress(a, events=[event(1)], updated_at=at(200)),
        progress(b, status="failed", error="bad"),
        progress(b, events=[event(0)]),  # b finished just before: fenced off
    ]
    assert await store.save_progress(batch) == {"b"}
    got_a = await get(store, "a")
    assert got_a is not None
    assert got_a.ctx == {"step": 1}
    assert got_a.updated_at == at(200)
    assert [e.sequence for e in await store.read_events("run-a")] == [0, 1]
    assert await store.read_events("run-b") == []
    assert await store.save_progress([]) == set()


async def test_concurrent_save_progress_calls_each_get_their_answer(
    store: AbstractWorkflowStore,
) -> None:
    rows = [handler(f"h{i}", owner_id=f"o{i}") for i in range(20)]
    for h in rows:
        await store.create_handler(h)
    calls = [
        store.save_progress([progress(h, events=[event(0)], owner_id="x" if i % 3 else h.owner_id)])
        for i, h in enumerate(rows)
    ]
    results = await asyncio.gather(*calls)
    assert results == [set() if i % 3 == 0 else {h.handler_id} for i, h in enumerate(rows)]
    written = await store.last_sequences([h.run_id or "" for h in rows])
    assert written == {h.run_id: 0 for i, h in enumerate(rows) if i % 3 == 0}


async def test_concurrent_writes_apply_in_submission_order(store: AbstractWorkflowStore) -> None:
    h = handler("h", owner_id="o")
    fresh = handler("fresh", owner_id="o")
    await store.create_handler(h)
    results = await asyncio.gather(
        store.save_progress([progress(h, status="completed", events=[event(0)])]),
        store.save_progress([progress(h, events=[event(1)])]),  # after the finish: fenced off
        store.create_handler(fresh),
        store.save_progress([progress(fresh, events=[event(0)])]),  # sees the new row
    )
    assert results == [set(), {"h"}, None, set()]
    assert [e.sequence for e in await store.read_events("run-h")] == [0]
    assert [e.sequence for e in await store.read_events("run-fresh")] == [0]


async def test_finalize_handler_appends_after_the_last_event(store: AbstractWorkflowStore) -> None:
    h = handler("h", owner_id="o", lease_expires_at=LEASE, idle_since=at(1))
    await store.create_handler(h)
    await store.save_progress([progress(h, events=[event(0), event(1), event(2)])])
    await store.enqueue_event("h", h.run_id or "", "{}", None, at(1))
    stop = StoredEvent(99, '{"type":"StopEvent"}', "StopEvent", terminal=True, created_at=at(50))
    assert await store.finalize_handler(
        "h", status="cancelled", error="by user", event=stop, at=at(60)
    )
    got = await get(store, "h")
    assert got is not None
    assert (got.status, got.error, got.result) == ("cancelled", "by user", None)
    assert (got.updated_at, got.completed_at) == (at(60), at(60))
    assert (got.owner_id, got.lease_expires_at, got.idle_since) == (None, None, None)
    assert (await store.read_events(h.run_id or ""))[-1] == StoredEvent(
        3, stop.payload, "StopEvent", terminal=True, created_at=at(50)
    )
    assert await store.read_inbox(["h"]) == []
    assert not await store.finalize_handler("h", status="failed", error="x", event=stop, at=at(70))
    assert not await store.finalize_handler("nope", status="failed", error=None, event=stop, at=T0)


async def test_finalize_a_run_without_events_starts_at_zero(store: AbstractWorkflowStore) -> None:
    await store.create_handler(handler("h"))
    stop = event(42, terminal=True)
    assert await store.finalize_handler("h", status="failed", error="e", event=stop, at=at(1))
    assert [e.sequence for e in await store.read_events("run-h")] == [0]


# -- event log -----------------------------------------------------------------------------


async def test_read_events_pages_by_sequence(store: AbstractWorkflowStore) -> None:
    h = handler("h", owner_id="o")
    await store.create_handler(h)
    await store.save_progress([progress(h, events=[event(i) for i in range(5)])])
    await store.save_progress([progress(h, events=[event(5, internal=True, terminal=True)])])
    log = await store.read_events("run-h")
    assert log == [event(i) for i in range(5)] + [event(5, internal=True, terminal=True)]
    assert log[0].created_at.tzinfo == timezone.utc
    assert [e.sequence for e in await store.read_events("run-h", after_sequence=2)] == [3, 4, 5]
    assert [e.sequence for e in await store.read_events("run-h", limit=2)] == [0, 1]
    assert await store.read_events("run-h", after_sequence=5) == []
    assert await store.read_events("nope") == []
    assert await store.last_sequences(["run-h", "nope", "run-h"]) == {"run-h": 5}
    assert await store.last_sequences([]) == {}


# -- inbox ---------------------------------------------------------------------------------


async def test_enqueue_only_into_the_live_run(store: AbstractWorkflowStore) -> None:
    await store.create_handler(handler("h", run_id="r"))
    await store.create_handler(handler("done", run_id="rd", status="completed"))
    first = await store.enqueue_event("h", "r", '{"a":"\U0001f600"}', "step", at(1))
    second = await store.enqueue_event("h", "r", "{}", None, at(2))
    assert first is not None
    assert second is not None
    assert second > first
    assert await store.enqueue_event("h", "other-run", "{}", None, at(3)) is None
    assert await store.enqueue_event("done", "rd", "{}", None, at(3)) is None
    assert await store.enqueue_event("missing", "r", "{}", None, at(3)) is None
    entries = await store.read_inbox(["h", "done", "missing"])
    assert [(e.id, e.handler_id, e.run_id, e.payload, e.step, e.created_at) for e in entries] == [
        (first, "h", "r", '{"a":"\U0001f600"}', "step", at(1)),
        (second, "h", "r", "{}", None, at(2)),
    ]
    assert await store.read_inbox([]) == []


async def test_inbox_ids_are_never_reused(store: AbstractWorkflowStore) -> None:
    h = handler("h", owner_id="o")
    await store.create_handler(h)
    first = await store.enqueue_event("h", h.run_id or "", "{}", None, at(1))
    assert first is not None
    await store.save_progress([progress(h, consumed_inbox=[first])])
    again = await store.enqueue_event("h", h.run_id or "", "{}", None, at(2))
    assert again is not None
    assert again > first


# -- ownership -----------------------------------------------------------------------------


async def test_claim_rules(store: AbstractWorkflowStore) -> None:
    now = at(1000)
    rows = {
        "unowned": handler("unowned", started_at=at(1)),
        # The owner's heartbeat decides, not the run's own lease.
        "lapsed": handler("lapsed", owner_id="o-lapsed", lease_expires_at=now + timedelta(hours=1)),
        "no-row": handler("no-row", owner_id="o-gone", lease_expires_at=now + timedelta(hours=1)),
        "live": handler("live", owner_id="o1", lease_expires_at=now - timedelta(hours=1)),
        "at-now": handler("at-now", owner_id="o-now"),
        "dead": handler("dead", owner_id="dead-1"),
        "done": handler("done", status="completed"),
        "idle": handler("idle", idle_since=at(5)),
        "idle-mail": handler("idle-mail", idle_since=at(5), run_id="rm"),
    }
    for h in rows.values():
        await store.create_handler(h)
    await store.enqueue_event("idle-mail", "rm", "{}", None, at(6))
    for owner, until in [
        ("o-lapsed", now - timedelta(seconds=1)),
        ("o1", now + timedelta(seconds=1)),
        ("o-now", now),
        ("dead-1", now + timedelta(hours=1)),
    ]:
        await store.heartbeat(owner, now=at(0), expires_at=until)

    lease = now + timedelta(minutes=5)
    claimed = await store.claim_handlers(
        "me", now=now, lease_until=lease, dead_owners=["dead-1", "dead-2"]
    )
    assert [h.handler_id for h in claimed] == [
        "dead",
        "idle-mail",
        "lapsed",
        "no-row",
        "unowned",
    ]
    attempts = {h.handler_id: h.resume_attempts for h in claimed}
    assert attempts == {"dead": 1, "idle-mail": 0, "lapsed": 1, "no-row": 1, "unowned": 0}
    previous = {h.handler_id: h.previous_owner_id for h in claimed}
    assert previous == {
        "dead": "dead-1",
        "idle-mail": None,
        "lapsed": "o-lapsed",
        "no-row": "o-gone",
        "unowned": None,
    }
    assert all(h.owner_id == "me" and h.lease_expires_at == lease for h in claimed)
    stored = await get(store, "lapsed")
    assert stored is not None
    assert (stored.owner_id, stored.resume_attempts) == ("me", 1)
    # Claiming renewed our heartbeat: what we took is not adoptable.
    assert "me" in await store.list_owners()
    assert await store.claim_handlers("other", now=now, lease_until=lease) == []


async def test_claim_returns_checkpoints_in_order_up_to_the_limit(
    store: AbstractWorkflowStore,
) -> None:
    for i in range(5):
        await store.create_handler(handler(f"h{i}", started_at=at(10 - i), ctx={"i": i}))
    first = await store.claim_handlers("me", now=T0, lease_until=LEASE, limit=2)
    assert [(h.handler_id, h.ctx) for h in first] == [("h4", {"i": 4}), ("h3", {"i": 3})]
    picked = await store.claim_handlers(
        "you", now=T0, lease_until=LEASE, handler_ids=["h0", "h3", "h0", "zz"]
    )
    assert [h.handler_id for h in picked] == ["h0"]
    assert await store.claim_handlers("you", now=T0, lease_until=LEASE, handler_ids=[]) == []


async def test_heartbeat_release_and_list_owners(store: AbstractWorkflowStore) -> None:
    for name, owner, status in [
        ("a", "o1", "running"),
        ("b", "o1", "running"),
        ("c", "o2", "running"),
        ("d", "o3", "completed"),
    ]:
        await store.create_handler(
            handler(name, owner_id=owner, status=status, lease_expires_at=T0)
        )
    assert await store.list_owners() == set()
    assert await store.heartbeat("o1", now=T0, expires_at=LEASE) == {"a", "b"}
    assert await store.heartbeat("o2", now=T0, expires_at=at(1)) == {"c"}
    assert await store.heartbeat("nobody", now=T0, expires_at=LEASE) == set()
    assert await store.list_owners() == {"o1", "o2", "nobody"}
    # Lapsed owners holding nothing are forgotten; o2 still holds c.
    assert await store.heartbeat(
        "o1", now=LEASE + timedelta(days=1), expires_at=LEASE + timedelta(days=2)
    ) == {"a", "b"}
    assert await store.list_owners() == {"o1", "o2"}
    # A heartbeat writes no run: per-run leases are not renewed.
    leases = {h.handler_id: h.lease_expires_at for h in await store.query(HandlerQuery())}
    assert leases == {"a": T0, "b": T0, "c": T0, "d": T0}

    await store.release_handlers("o1", ["a", "c"])  # c is not o1's: untouched
    owners = {h.handler_id: h.owner_id for h in await store.query(HandlerQuery())}
    assert owners == {"a": None, "b": "o1", "c": "o2", "d": "o3"}
    await store.release_handlers("o2", None)  # everything: its heartbeat row goes too
    await store.release_handlers("o1", [])
    assert await store.list_owners() == {"o1"}
    released = await get(store, "c")
    assert released is not None
    assert released.lease_expires_at is None
    assert released.status == "running"


async def test_a_lapsed_owner_loses_its_runs_and_its_writes(store: AbstractWorkflowStore) -> None:
    h = handler("h", owner_id="o1")
    await store.create_handler(h)
    assert await store.heartbeat("o1", now=T0, expires_at=at(10)) == {"h"}
    assert await store.claim_handlers("me", now=at(5), lease_until=at(20)) == []
    [taken] = await store.claim_handlers("me", now=at(11), lease_until=at(20))
    assert (taken.previous_owner_id, taken.resume_attempts) == ("o1", 1)
    # The old owner comes back: it owns nothing any more, and is fenced off.
    assert await store.heartbeat("o1", now=at(12), expires_at=at(30)) == set()
    assert await store.save_progress([progress(h, events=[event(0)])]) == {"h"}
    assert await store.read_events("run-h") == []
    assert await store.save_progress([progress(taken, events=[event(0)])]) == set()


async def test_a_run_written_by_its_owner_keeps_the_owner_alive_until_its_lease(
    store: AbstractWorkflowStore,
) -> None:
    """A slow write that lands after its owner's heartbeat lapsed is not adoptable at once."""
    await store.heartbeat("o1", now=T0, expires_at=at(10))
    await store.create_handler(handler("h", owner_id="o1", lease_expires_at=at(30)))
    assert await store.claim_handlers("me", now=at(20), lease_until=at(40)) == []
    [taken] = await store.claim_handlers("me", now=at(31), lease_until=at(40))
    assert taken.previous_owner_id == "o1"
    # A later heartbeat is never shortened by a row's earlier lease; nor is a row made
    # for an owner that has none (its rounds write it before it owns anything).
    await store.heartbeat("o2", now=T0, expires_at=at(50))
    await store.create_handler(handler("g", owner_id="o2", lease_expires_at=at(5)))
    assert await store.claim_handlers("me", now=at(45), lease_until=at(60), handler_ids=["g"]) == []
    await store.create_handler(handler("f", owner_id="o3", lease_expires_at=at(90)))
    assert "o3" not in await store.list_owners()


async def test_a_claimer_never_claims_its_own_lapsed_runs(store: AbstractWorkflowStore) -> None:
    """Claiming renews the claimer's heartbeat: its own runs are not abandoned to it."""
    await store.heartbeat("me", now=T0, expires_at=at(10))
    await store.create_handler(handler("mine", owner_id="me"))
    assert await store.claim_handlers("me", now=at(20), lease_until=at(40)) == []
    [row] = await store.query(HandlerQuery(handler_id_in=["mine"]))
    assert (row.owner_id, row.resume_attempts) == ("me", 0)


# -- SQL stores only -----------------------------------------------------------------------


async def test_two_stores_never_claim_the_same_run(sql_store: SqlAlchemyWorkflowStore) -> None:
    for i in range(40):
        await sql_store.create_handler(handler(f"h{i:02}"))
    other = SqlAlchemyWorkflowStore(sql_store.url)
    await other.start()
    try:
        claims = await asyncio.gather(
            *[
                store.claim_handlers(owner, now=T0, lease_until=LEASE, limit=3)
                for _ in range(10)
                for store, owner in [(sql_store, "a"), (other, "b")]
            ]
        )
    finally:
        await other.close()
    taken = [h.handler_id for claim in claims for h in claim]
    assert len(taken) == len(set(taken)) == 40


async def test_a_faulty_write_fails_alone(sql_store: SqlAlchemyWorkflowStore) -> None:
    h = handler("h", owner_id="o")
    await sql_store.create_handler(h)
    await sql_store.save_progress([progress(h, events=[event(0)])])
    # An unpaired surrogate is not Unicode: no driver can send it. The other
    # writes in the same group commit still land, and this one writes nothing.
    results = await asyncio.gather(
        sql_store.create_handler(handler("before")),
        sql_store.save_progress([progress(h, events=[event(1, payload='"\ud800"')])]),
        sql_store.create_handler(handler("after")),
        return_exceptions=True,
    )
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], Exception)
    assert not isinstance(results[1], StoreUnavailableError)
    assert await ids(sql_store) == ["after", "before", "h"]
    assert await sql_store.read_events("run-h") == [event(0)]


async def test_progress_written_twice_is_written_once(store: AbstractWorkflowStore) -> None:
    # A connection cut mid-commit leaves the writer unsure whether the commit
    # happened; it sends the same progress again, which must not fail.
    h = handler("h", owner_id="o")
    await store.create_handler(h)
    item = progress(h, events=[event(0), event(1)])
    await store.save_progress([item])
    assert await store.save_progress([item]) == set()
    assert await store.read_events("run-h") == [event(0), event(1)]


async def test_ping(store: AbstractWorkflowStore) -> None:
    await store.ping()
