"""A step (``store._steps``): payloads of one kind, run in a transaction, their outcomes handed out.

On their own, with no database: a batch function over a list, futures of this
event loop, and a real feed of a group commit that has no transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from llama_workflows_asgi.errors import ConflictError, StoreUnavailableError
from llama_workflows_asgi.store._batch import GroupCommit, Outcome, Result, no_transaction
from llama_workflows_asgi.store._steps import Lane, Run

pytestmark = pytest.mark.timeout(30)


async def lengths(_: None, payloads: list[str]) -> list[Outcome[int]]:
    """One outcome per payload: its length, or a refusal for ``taken``."""
    return [ConflictError(p) if p == "taken" else len(p) for p in payloads]


def futures(count: int) -> list[asyncio.Future[int]]:
    loop = asyncio.get_running_loop()
    return [loop.create_future() for _ in range(count)]


class Source:
    """A feed's source that records what it is told."""

    def __init__(self) -> None:
        self.results: list[tuple[str, Result[int]]] = []
        self.given_back: list[list[str]] = []

    def take(self) -> list[str]:
        return []

    def settled(self, results: Sequence[tuple[str, Result[int]]]) -> None:
        self.results.extend(results)

    def kept(self, payloads: Sequence[str], error: StoreUnavailableError) -> None:
        self.given_back.append(list(payloads))


async def test_outcomes_are_kept_until_the_commit_then_handed_to_each_caller() -> None:
    waiting = futures(3)
    run = Run(lengths, ["ab", "taken", "c"], waiting)

    await run.run(None)
    assert not any(f.done() for f in waiting)  # nothing is told before the commit
    run.settle()

    assert (waiting[0].result(), waiting[2].result()) == (2, 1)
    with pytest.raises(ConflictError):
        waiting[1].result()


async def test_a_cancelled_caller_is_skipped_and_the_others_still_hear() -> None:
    waiting = futures(2)
    waiting[0].cancel()
    run = Run(lengths, ["ab", "c"], waiting)

    await run.run(None)
    run.settle()

    assert waiting[0].cancelled()
    assert waiting[1].result() == 1


async def test_an_outage_gives_each_caller_its_own_error_naming_the_cause() -> None:
    waiting = futures(2)
    cause = ConnectionRefusedError("the database is away")

    Run(lengths, ["a", "b"], waiting).fail(cause)

    errors = [f.exception() for f in waiting]
    assert all(isinstance(e, StoreUnavailableError) for e in errors)
    assert errors[0] is not errors[1]
    assert [e.__cause__ for e in errors if e is not None] == [cause, cause]


async def test_any_other_failure_is_every_caller_s_error() -> None:
    waiting = futures(2)
    bug = RuntimeError("a faulty write")

    Run(lengths, ["a", "b"], waiting).fail(bug)

    assert [f.exception() for f in waiting] == [bug, bug]


async def test_a_feed_s_payloads_go_back_to_its_source_on_an_outage_only() -> None:
    source = Source()
    feed = GroupCommit(no_transaction).feed(lengths, source)

    Run(lengths, ["a", "b"], None, feed).fail(ConnectionRefusedError("away"))
    assert source.given_back == [["a", "b"]]
    assert source.results == []

    bug = RuntimeError("a faulty write")
    Run(lengths, ["c"], None, feed).fail(bug)
    assert source.results == [("c", bug)]
    feed.close()


async def test_split_gives_one_step_per_payload_with_its_own_caller() -> None:
    waiting = futures(2)
    steps = Run(lengths, ["ab", "c"], waiting).split()

    assert [len(step) for step in steps] == [1, 1]
    for step in reversed(steps):
        await step.run(None)
        step.settle()
    assert [f.result() for f in waiting] == [2, 1]


async def test_a_lane_hands_out_its_waiting_jobs_in_order_at_most_count_at_a_time() -> None:
    writer: GroupCommit[None] = GroupCommit(no_transaction)
    lane: Lane[None, str, int] = writer.lane(lengths)

    submitted = [asyncio.ensure_future(lane.submit(p)) for p in ("a", "bb", "ccc")]
    await asyncio.sleep(0)  # queued; the writer task has not run yet
    first = lane.take(2)

    assert first is not None
    assert len(first) == 2
    await first.run(None)
    first.settle()
    assert await asyncio.gather(*submitted[:2]) == [1, 2]
    assert await submitted[2] == 3  # the writer's own batch took the last one
    assert lane.take(5) is None
    await writer.aclose()
