"""``store._lanes``: the store's kinds of write on one group commit, and its progress feed.

The lanes run on a group commit of their own over the SQL store's write
engine (SQLite file and PostgreSQL): concurrent writes of every kind share one
transaction, and each lane's payload reaches the batch function of its kind.
:class:`Publishing` announces the runs whose events were written, and only those.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from llama_workflows_asgi.errors import StoreUnavailableError
from llama_workflows_asgi.store import (
    HandlerQuery,
    RunProgress,
    SqlAlchemyWorkflowStore,
    SqliteWorkflowStore,
)
from llama_workflows_asgi.store import _create as creating
from llama_workflows_asgi.store import _ownership as ownership
from llama_workflows_asgi.store import _progress as progress_
from llama_workflows_asgi.store import _writes as writes
from llama_workflows_asgi.store._batch import GroupCommit, Result
from llama_workflows_asgi.store._lanes import Lanes, Publishing
from llama_workflows_asgi.store.notifications import Notice, Notifications
from tests.support.factories import LEASE, T0, at, event, handler, progress
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)

Writer = GroupCommit[AsyncConnection]


@pytest.fixture
async def writer(sql_store: SqlAlchemyWorkflowStore) -> AsyncIterator[Writer]:
    writer: Writer = GroupCommit(sql_store.write_engine.begin)
    yield writer
    await writer.aclose()


class Pending:
    """A progress source: items to write once, and what the writer said of them."""

    def __init__(self, items: Sequence[RunProgress]) -> None:
        self.items = list(items)
        self.results: dict[str, Result[bool]] = {}
        self.outages: list[StoreUnavailableError] = []

    def take(self) -> Sequence[RunProgress]:
        taken, self.items = self.items, []
        return taken

    def settled(self, results: Sequence[tuple[RunProgress, Result[bool]]]) -> None:
        self.results.update((item.handler_id, result) for item, result in results)

    def kept(self, payloads: Sequence[RunProgress], error: StoreUnavailableError) -> None:
        self.outages.append(error)


def listening(hub: Notifications) -> list[tuple[Notice, set[str]]]:
    heard: list[tuple[Notice, set[str]]] = []

    def listener(notice: Notice, keys: Collection[str]) -> None:
        heard.append((notice, set(keys)))

    hub.subscribe(listener)
    return heard


async def test_every_kind_of_write_reaches_its_function_in_one_transaction(
    sql_store: SqlAlchemyWorkflowStore, writer: Writer
) -> None:
    h = handler("h", owner_id="me")
    await sql_store.create_handler(h)
    lanes = Lanes(writer)
    first = await asyncio.gather(
        lanes.create.submit(creating.Create(handler("a"), None)),
        lanes.upsert.submit(handler("u")),
        lanes.progress.submit([progress(h, events=[event(0)])]),
        lanes.enqueue.submit(writes.Enqueue("h", "run-h", '{"n":1}', None, at(1))),
        lanes.heartbeat.submit(ownership.Beat("me", T0, at(60))),
    )
    assert writer.transactions == 1
    assert first[:3] == [None, None, set()]
    assert isinstance(first[3], int)
    assert first[4] == {"h"}
    stop = event(99, event_type="StopEvent", terminal=True)
    other = ownership.Beat("other", T0, at(60))
    second = await asyncio.gather(
        lanes.finalize.submit(writes.Finalize("h", "failed", "boom", stop, at(2))),
        lanes.reopen.submit(writes.Reopen("h", "run-h", None, at(3))),
        lanes.release.submit(("me", None)),
        lanes.claim.submit(ownership.Claim("other", at(4), LEASE, (), ("a",), 10, other)),
        lanes.delete.submit(HandlerQuery(handler_id_in=["u"])),
    )
    assert writer.transactions == 2
    assert second[:3] == [True, True, None]
    claimed = second[3]
    assert [c.handler_id for c in claimed] == ["a"]
    assert second[4] == 1
    stored = {row.handler_id: row for row in await sql_store.query(HandlerQuery())}
    assert sorted(stored) == ["a", "h"]
    assert (stored["h"].status, stored["h"].owner_id) == ("running", None)
    assert stored["a"].owner_id == "other"
    log = [(e.sequence, e.event_type) for e in await sql_store.read_events("run-h")]
    assert log == [(0, "Tick"), (1, "StopEvent")]


async def test_publishing_announces_only_the_runs_whose_events_were_written(
    sql_store: SqlAlchemyWorkflowStore, writer: Writer
) -> None:
    for name in ("h", "quiet"):
        await sql_store.create_handler(handler(name, owner_id="me"))
    await sql_store.create_handler(handler("taken", owner_id="thief"))
    source = Pending(
        [
            progress(handler("h", owner_id="me"), events=[event(0)]),
            progress(handler("quiet", owner_id="me"), ctx='{"step":1}'),  # no events
            progress(handler("taken", owner_id="me"), events=[event(0)]),  # fenced off
        ]
    )
    hub = Notifications()
    heard = listening(hub)
    feed = writer.feed(progress_.save_run_progress, Publishing(source, hub))
    feed.poke()
    await eventually(lambda: len(source.results) == 3, "the three items settled")
    feed.close()
    assert source.results == {"h": True, "quiet": True, "taken": False}
    assert heard == [("events", {"run-h"})]
    assert await sql_store.read_events("run-taken") == []


async def test_an_outage_gives_the_items_back_and_announces_nothing(tmp_path: Path) -> None:
    store = SqliteWorkflowStore(tmp_path / "locked.db", busy_timeout=0.1)
    await store.start()
    await store.create_handler(handler("h", owner_id="me"))
    writer: Writer = GroupCommit(store.write_engine.begin)
    source = Pending([progress(handler("h", owner_id="me"), events=[event(0)])])
    hub = Notifications()
    heard = listening(hub)
    feed = writer.feed(progress_.save_run_progress, Publishing(source, hub))
    blocker = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        feed.poke()
        await eventually(lambda: bool(source.outages), "the outage reported to the source")
        feed.close()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        await writer.aclose()
    assert "locked" in str(source.outages[0])
    assert source.results == {}
    assert heard == []
    assert await store.read_events("run-h") == []
    await store.close()
