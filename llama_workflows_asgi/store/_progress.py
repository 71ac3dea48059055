"""The progress write: many runs' checkpoints, events and statuses in a few statements.

Progress items are decided one by one against the handler rows, locked and
read once per batch; then every changed row is written back with one
executemany (one UPDATE from arrays on PostgreSQL), the events with one
insert, the consumed inbox entries with one delete. An item whose writer no
longer owns its run (fencing, see ``state``) is reported lost and writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Text, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from . import state
from ._batch import Outcome
from ._notify_pg import notify
from ._pg_bulk import BulkInsert, by_dialect, by_key, unnested
from ._queries import chunks
from ._rows import event_values
from ._writes import STATE_COLUMNS, c, events, handlers, inbox
from .base import RunProgress

_PROGRESS_UPDATE = (
    update(handlers)
    .where(c.handler_id == bindparam("b_handler_id"))
    .values(
        {name: bindparam(f"b_{name}", type_=c[name].type) for name in STATE_COLUMNS}
        # ctx is NULL in the parameters when this batch brought no new checkpoint.
        | {"ctx": func.coalesce(bindparam("b_ctx", type_=Text()), c.ctx)}
    )
)
# PostgreSQL: the same parameters as arrays, every row in one UPDATE ... FROM.
_EACH = unnested({f"b_{name}": c[name] for name in ("handler_id", *STATE_COLUMNS, "ctx")})
_PG_PROGRESS_UPDATE = (
    update(handlers)
    .where(c.handler_id == _EACH.c.b_handler_id)
    .values(
        {name: _EACH.c[f"b_{name}"] for name in STATE_COLUMNS}
        | {"ctx": func.coalesce(_EACH.c.b_ctx, c.ctx)}
    )
)


# Idempotent: when a connection dies mid-commit the commit may have happened;
# the writer then sends the same events (same run, same sequences: only the
# owner writes them) again. PostgreSQL takes the rows as arrays (``_pg_bulk``).
_EVENTS = BulkInsert(events, conflict=[events.c.run_id, events.c.sequence])
_CONSUME = by_dialect(lambda ids: delete(inbox).where(ids(inbox.c.id)))
_CLEAR_INBOXES = by_dialect(lambda ids: delete(inbox).where(ids(inbox.c.handler_id)))
_LOCK = by_dialect(
    lambda ids: (
        select(c.handler_id, *(c[name] for name in STATE_COLUMNS))
        .where(ids(c.handler_id))
        .order_by(c.handler_id)  # a stable lock order keeps two processes from deadlocking
        .with_for_update()
    )
)


@dataclass
class _RunState:
    """A handler row as progress items change it, before it is written back."""

    values: dict[str, Any]
    ctx: str | None = None
    changed: bool = False

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
    events: list[dict[str, Any]] = field(default_factory=list)
    consumed: list[int] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    def apply(self, item: RunProgress) -> bool:
        """Apply ``item`` if it is fenced in (its writer still owns the run)."""
        row, transition = self.states.get(item.handler_id), state.progress(item)
        if row is None or not transition.requires.admits(row):
            return False
        sets = transition.sets
        if "ctx" in sets:  # written apart: a checkpoint is never read back here
            row.ctx = sets["ctx"]
        row.values.update((k, v) for k, v in sets.items() if k != "ctx")
        if transition.ends_run:
            self.finished.append(item.handler_id)
        row.changed = True
        self.events.extend(event_values(item.run_id, event) for event in item.events)
        self.consumed.extend(item.consumed_inbox)
        return True

    async def write(self, conn: AsyncConnection) -> None:
        """One statement per table, whatever the number of items (arrays on PostgreSQL)."""
        rows = [_update_params(hid, s) for hid, s in self.states.items() if s.changed]
        dialect = conn.dialect.name
        if rows and dialect == "postgresql":
            await conn.execute(_PG_PROGRESS_UPDATE, by_key(rows, list(_EACH.c.keys())))
        elif rows:
            await conn.execute(_PROGRESS_UPDATE, rows)
        if self.events:
            await _EVENTS.execute(conn, self.events)
            await notify(conn, {"events": {event["run_id"] for event in self.events}})
        for ids in chunks(self.consumed):
            await conn.execute(_CONSUME[dialect], {"ids": list(ids)})
        for hids in chunks(self.finished):
            await conn.execute(_CLEAR_INBOXES[dialect], {"ids": list(hids)})


def _update_params(handler_id: str, row: _RunState) -> dict[str, Any]:
    params = {f"b_{name}": row.values[name] for name in STATE_COLUMNS}
    params.update(b_handler_id=handler_id, b_ctx=row.ctx)
    return params


async def _lock_states(conn: AsyncConnection, handler_ids: Sequence[str]) -> dict[str, _RunState]:
    states: dict[str, _RunState] = {}
    for ids in chunks(sorted(handler_ids)):
        for row in (await conn.execute(_LOCK[conn.dialect.name], {"ids": list(ids)})).mappings():
            values = dict(row)
            states[values.pop("handler_id")] = _RunState(values)
    return states


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
