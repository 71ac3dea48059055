"""The progress write: many runs' checkpoints, events and statuses in a few statements.

Progress items are decided one by one against the handler rows, locked and
read once per batch (only what decides on them: status, run and owner); then
every changed row is written back with one executemany per set of columns
changed, the events with one insert, the consumed inbox entries with one
delete (the statements are ``_progress_sql``'s). An item whose writer no
longer owns its run (fencing, see ``state``) is reported lost and writes
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from . import _progress_sql as sql
from . import state
from ._batch import Outcome
from ._notify_pg import notify
from .base import RunProgress, StoredEvent


@dataclass
class _RunState:
    """A handler row as progress items change it, before it is written back."""

    values: dict[str, Any]  # the row's sql.DECIDING columns, as the items leave them
    sets: dict[str, Any] = field(default_factory=dict)  # every column the items set

    @property
    def status(self) -> str:
        """The row's status, for ``state.Requirement.admits``."""
        return str(self.values["status"])

    @property
    def run_id(self) -> str | None:
        """The row's run."""
        run_id: str | None = self.values["run_id"]
        return run_id

    @property
    def owner_id(self) -> str | None:
        """The row's owner."""
        owner_id: str | None = self.values["owner_id"]
        return owner_id


@dataclass
class _ProgressPlan:
    """Applies progress items in order against locked rows; then writes the outcome."""

    states: dict[str, _RunState]
    events: list[tuple[str, StoredEvent]] = field(default_factory=list)
    consumed: list[int] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    def apply(self, item: RunProgress) -> bool:
        """Apply ``item`` if it is fenced in (its writer still owns the run)."""
        row, transition = self.states.get(item.handler_id), state.progress(item)
        if row is None or not transition.requires.admits(row):
            return False
        sets = transition.sets
        row.sets.update(sets)
        row.values.update((k, v) for k, v in sets.items() if k in row.values)
        if transition.ends_run:
            self.finished.append(item.handler_id)
        self.events.extend((item.run_id, event) for event in item.events)
        self.consumed.extend(item.consumed_inbox)
        return True

    async def write(self, conn: AsyncConnection) -> None:
        """A few statements per table, whatever the number of items."""
        changed = {hid: row.sets for hid, row in self.states.items() if row.sets}
        if changed:
            await sql.update_rows(conn, changed)
        if self.events:
            await sql.insert_events(conn, self.events)
            await notify(conn, {"events": {run_id for run_id, _ in self.events}})
        await sql.delete_inbox(conn, self.consumed, self.finished)


async def _lock_states(conn: AsyncConnection, handler_ids: Sequence[str]) -> dict[str, _RunState]:
    return {hid: _RunState(values) for hid, values in await sql.lock(conn, handler_ids)}


async def save_progress(
    conn: AsyncConnection, batches: list[Sequence[RunProgress]]
) -> list[set[str]]:
    """Batch function for ``save_progress``: all batches of the group in one pass.

    Items are decided in submission order, as if each batch ran alone, but the
    rows are read once and written back with one statement per table.
    """
    touched = {item.handler_id for batch in batches for item in batch}
    plan = _ProgressPlan(await _lock_states(conn, list(touched)))
    outcomes: list[set[str]] = []
    for batch in batches:
        outcomes.append({item.handler_id for item in batch if not plan.apply(item)})
    await plan.write(conn)
    return outcomes


async def save_run_progress(conn: AsyncConnection, items: list[RunProgress]) -> list[Outcome[bool]]:
    """Batch function of the run service's feed: one item per run; ``False`` when fenced off."""
    (lost,) = await save_progress(conn, [items])
    return [item.handler_id not in lost for item in items]
