"""``store._progress``: the progress batch function, in one real transaction.

Several jobs' progress batches go through one call, as the group-commit writer
sends them: each is decided in submission order against the rows as the
batches before it left them, and an item whose writer lost the run writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from llama_workflows_asgi.store import (
    HandlerQuery,
    PersistentHandler,
    RunProgress,
    SqlAlchemyWorkflowStore,
)
from llama_workflows_asgi.store import _progress as progress_
from tests.support.factories import event, handler, progress


async def rows(store: SqlAlchemyWorkflowStore) -> dict[str, PersistentHandler]:
    return {h.handler_id: h for h in await store.query(HandlerQuery())}


async def test_progress_batches_are_decided_in_submission_order(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    mine = handler("h", owner_id="me")
    await sql_store.create_handler(mine)
    await sql_store.create_handler(handler("g", owner_id="me"))
    batches: list[Sequence[RunProgress]] = [
        [progress(mine, events=[event(0)], ctx='{"step":1}')],
        [
            progress(mine, events=[event(1)], status="completed", result='{"value":{}}'),
            progress(handler("g", owner_id="thief"), events=[event(0)]),
        ],
        [progress(mine, events=[event(2)])],  # the run finished in the batch before
        [progress(handler("missing", owner_id="me"))],
    ]
    async with sql_store.write_engine.begin() as conn:
        lost = await progress_.save_progress(conn, batches)
    assert lost == [set(), {"g"}, {"h"}, {"missing"}]
    stored = await rows(sql_store)
    assert stored["h"].status == "completed"
    assert stored["h"].ctx == {"step": 1}
    assert stored["h"].owner_id is None
    assert [e.sequence for e in await sql_store.read_events("run-h")] == [0, 1]
    assert await sql_store.read_events("run-g") == []


async def test_progress_sent_again_after_an_unknown_commit_adds_nothing(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    mine = handler("h", owner_id="me")
    await sql_store.create_handler(mine)
    item = progress(mine, events=[event(0), event(1)])
    async with sql_store.write_engine.begin() as conn:
        assert await progress_.save_progress(conn, [[item], [item]]) == [set(), set()]
    assert [e.sequence for e in await sql_store.read_events("run-h")] == [0, 1]
