"""The run state machine (``store.state``), on its own: requirements, transitions, invariants.

Requirements are checked exhaustively over a small domain of rows (every
status, no run / this run / another run, unowned / this owner / another), and
against the WHERE clauses the SQL store derives from them, on a real SQLite
table. Transitions are checked as properties over generated progress items and
sequences of writes.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import get_args

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, insert, select

from llama_workflows_asgi.store import PersistentHandler, RunProgress, state
from llama_workflows_asgi.store._progress_sql import DECIDING, WRITTEN
from llama_workflows_asgi.store._rows import handler_values
from llama_workflows_asgi.store._writes import admitting
from llama_workflows_asgi.store.schema import handlers_table, metadata
from tests.support.factories import T0, at, handler

RUN_IDS = (None, "r1", "r2")
OWNERS = (None, "a", "b")


def rows() -> Iterator[PersistentHandler]:
    """One handler row per (status, run, owner) combination."""
    combos = itertools.product(state.STATUSES, RUN_IDS, OWNERS)
    for n, (status, run_id, owner_id) in enumerate(combos):
        yield handler(f"h{n}", status=status, run_id=run_id, owner_id=owner_id)


def requirements() -> Iterator[state.Requirement]:
    """Every requirement the stores use, for runs and owners of the domain."""
    for owner_id in OWNERS:
        yield state.fence(owner_id, "r1")
    yield state.FINALIZABLE
    yield state.reopen("r1", ctx=None, at=T0).requires
    yield state.replaceable("r1")
    yield state.accepts_events("r1")


# -- statuses ---------------------------------------------------------------------


def test_statuses_come_from_one_literal() -> None:
    assert state.STATUSES == ("running", "completed", "failed", "cancelled")
    assert get_args(state.Status) == state.STATUSES
    assert (
        set(state.FINISHED_STATUSES) == state.TERMINAL_STATUSES == set(state.STATUSES) - {"running"}
    )
    for row in rows():
        assert row.is_terminal == (row.status in state.TERMINAL_STATUSES)


# -- requirements -------------------------------------------------------------------


def test_a_fenced_write_needs_the_running_run_and_its_owner() -> None:
    for owner_id, row in itertools.product(OWNERS, rows()):
        expected = row.status == "running" and row.run_id == "r1" and row.owner_id == owner_id
        assert state.fence(owner_id, "r1").admits(row) == expected, (owner_id, row)


def test_finalizing_needs_a_running_run_whoever_owns_it() -> None:
    for row in rows():
        expected = row.status == "running" and row.run_id is not None
        assert state.FINALIZABLE.admits(row) == expected, row


def test_reopening_needs_the_same_failed_run() -> None:
    requirement = state.reopen("r1", ctx=None, at=T0).requires
    for row in rows():
        assert requirement.admits(row) == (row.status == "failed" and row.run_id == "r1"), row


def test_replacing_needs_the_same_finished_run() -> None:
    for row in rows():
        expected = row.is_terminal and row.run_id == "r1"
        assert state.replaceable("r1").admits(row) == expected, row


def test_events_are_accepted_only_by_the_running_run() -> None:
    for row in rows():
        expected = row.status == "running" and row.run_id == "r1"
        assert state.accepts_events("r1").admits(row) == expected, row


def test_the_sql_progress_plan_reads_what_requirements_read_writes_what_transitions_set() -> None:
    assert set(WRITTEN) <= set(handlers_table.c.keys())
    assert set(DECIDING) == {"status", "run_id", "owner_id"} <= set(handlers_table.c.keys())


def test_no_row_admits_nothing() -> None:
    assert not any(requirement.admits(None) for requirement in requirements())


def test_the_sql_where_clauses_say_what_the_requirement_says() -> None:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    domain = list(rows())
    with engine.begin() as conn:
        conn.execute(insert(handlers_table), [handler_values(row) for row in domain])
        for requirement in requirements():
            stmt = select(handlers_table.c.handler_id).where(*admitting(requirement))
            selected = set(conn.execute(stmt).scalars())
            expected = {row.handler_id for row in domain if requirement.admits(row)}
            assert selected == expected, requirement
    engine.dispose()


# -- transitions --------------------------------------------------------------------

moments = st.integers(min_value=0, max_value=10_000).map(lambda s: T0 + timedelta(seconds=s))
texts = st.none() | st.text(max_size=8).map(lambda s: f'{{"v":"{s}"}}')


@st.composite
def progress_items(draw: st.DrawFn) -> RunProgress:
    return RunProgress(
        handler_id="h",
        run_id=draw(st.sampled_from(["r1", "r2"])),
        owner_id=draw(st.sampled_from(OWNERS)),
        updated_at=draw(moments),
        ctx=draw(texts),
        status=draw(st.sampled_from(state.STATUSES)),
        result=draw(texts),
        error=draw(st.none() | st.text(max_size=8)),
        idle_since=draw(st.none() | moments),
        reset_attempts=draw(st.booleans()),
        release=draw(st.booleans()),
    )


@given(progress_items())
def test_progress_is_fenced_and_sets_what_its_item_says(item: RunProgress) -> None:
    transition = state.progress(item)
    sets = transition.sets

    assert transition.requires == state.fence(item.owner_id, item.run_id)
    assert sets["updated_at"] == item.updated_at
    assert ("ctx" in sets) == (item.ctx is not None)  # no checkpoint: the last one stays
    assert ("resume_attempts" in sets) == item.reset_attempts
    ends = item.status != "running"
    assert transition.ends_run == ends
    if ends:
        finished = state.finished(
            item.status, result=item.result, error=item.error, at=sets["updated_at"]
        )
        assert {k: sets[k] for k in finished} == finished  # type: ignore[literal-required]
    else:
        assert not {"status", "result", "error", "completed_at"} & set(sets)
        assert sets["idle_since"] == item.idle_since
        assert ({"owner_id", "lease_expires_at"} <= set(sets)) == item.release
        assert not {"owner_id", "lease_expires_at"} & set(sets) or item.release


@given(st.sampled_from(state.STATUSES), st.none() | st.text(max_size=8), moments)
def test_finishing_sets_the_outcome_the_end_and_no_owner(
    status: state.Status, error: str | None, moment: datetime
) -> None:
    transition = state.finalize(status, error=error, at=moment)

    assert transition.ends_run
    assert transition.requires == state.FINALIZABLE
    assert transition.sets == {
        "status": status,
        "result": None,
        "error": error,
        "updated_at": moment,
        "completed_at": moment,
        "idle_since": None,
        "owner_id": None,
        "lease_expires_at": None,
    }


def test_reopening_clears_the_outcome_and_the_owner() -> None:
    transition = state.reopen("r1", ctx='{"x":1}', at=at(3))

    assert not transition.ends_run
    assert transition.sets == {
        "status": "running",
        "ctx": '{"x":1}',
        "result": None,
        "error": None,
        "updated_at": at(3),
        "completed_at": None,
        "idle_since": None,
        "resume_attempts": 0,
        "owner_id": None,
        "lease_expires_at": None,
    }


# -- sequences of writes ---------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """The columns the state machine reads and writes, as a store would keep them."""

    status: state.Status = "running"
    run_id: str | None = "r1"
    owner_id: str | None = "a"
    lease_expires_at: datetime | None = T0
    resume_attempts: int = 2
    ctx: str | None = None
    result: str | None = None
    error: str | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    idle_since: datetime | None = None


def apply(row: Row, transition: state.Transition) -> Row:
    """What every store does: write the columns if the row admits the transition."""
    if not transition.requires.admits(row):
        return row
    return dataclasses.replace(row, **transition.sets)


claims = st.sampled_from(OWNERS).map(lambda owner: ("claim", owner))
writes = st.one_of(
    progress_items().map(lambda item: ("progress", item)),
    st.tuples(st.just("finalize"), st.sampled_from(state.STATUSES[1:]), moments),
    st.tuples(st.just("reopen"), st.sampled_from(["r1", "r2"]), moments),
    claims,
)


def step(row: Row, write: tuple[object, ...]) -> Row:
    kind = write[0]
    if kind == "progress":
        assert isinstance(write[1], RunProgress)
        return apply(row, state.progress(write[1]))
    if kind == "finalize":
        status, moment = write[1], write[2]
        assert isinstance(moment, datetime)
        return apply(row, state.finalize(status, error="e", at=moment))  # type: ignore[arg-type]
    if kind == "reopen":
        assert isinstance(write[1], str)
        assert isinstance(write[2], datetime)
        return apply(row, state.reopen(write[1], ctx=None, at=write[2]))
    # An ownership round (not the state machine's): a running row changes hands.
    owner = write[1]
    assert owner is None or isinstance(owner, str)
    lease = None if owner is None else T0
    return (
        dataclasses.replace(row, owner_id=owner, lease_expires_at=lease)
        if row.status == "running"
        else row
    )


@settings(max_examples=200)
@given(st.lists(writes, max_size=30))
def test_any_sequence_of_writes_keeps_the_row_consistent(
    sequence: list[tuple[object, ...]],
) -> None:
    row = Row()
    for write in sequence:
        before, row = row, step(row, write)
        if row.status in state.TERMINAL_STATUSES:
            # A finished run is nobody's, not idle, and says when it ended.
            assert row.owner_id is None
            assert row.lease_expires_at is None
            assert row.idle_since is None
            assert row.completed_at is not None
        else:
            assert row.completed_at is None
            assert row.result is None
            assert row.error is None
        if write[0] == "progress":
            item = write[1]
            assert isinstance(item, RunProgress)
            fenced_in = before.status == "running" and (before.run_id, before.owner_id) == (
                item.run_id,
                item.owner_id,
            )
            assert (row == before) or fenced_in  # a stale writer changes nothing
        if before.status in state.TERMINAL_STATUSES and row != before:
            assert write[0] == "reopen"
            assert before.status == "failed"
