"""SQL expressions shared by the store's reads and writes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    false,
    literal,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.sql.expression import FromClause

from .base import HandlerQuery
from .schema import UtcDateTime, handlers_table, inbox_table, owners_table

T = TypeVar("T")

# Stay well below SQLite's (32766) and asyncpg's (32767) bound-parameter limits.
CHUNK = 1000

handlers = handlers_table
inbox = inbox_table
owners = owners_table


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def query_filters(query: HandlerQuery) -> list[ColumnElement[bool]]:
    """The ``*_in`` filters of ``query``; an empty list matches nothing."""
    c = handlers.c
    conditions: list[ColumnElement[bool]] = []
    if query.handler_id_in is not None:
        conditions.append(c.handler_id.in_(query.handler_id_in))
    if query.workflow_name_in is not None:
        conditions.append(c.workflow_name.in_(query.workflow_name_in))
    if query.status_in is not None:
        conditions.append(c.status.in_(query.status_in))
    if query.principal_in is not None:
        conditions.append(_nullable_in(c.principal, query.principal_in))
    if query.version_in is not None:
        conditions.append(_nullable_in(c.version, query.version_in))
    return conditions


def _nullable_in(column: ColumnElement[str], values: Sequence[str | None]) -> ColumnElement[bool]:
    named = [v for v in values if v is not None]
    matches: list[ColumnElement[bool]] = [column.in_(named)] if named else []
    if None in values:
        matches.append(column.is_(None))
    return or_(false(), *matches)


def listing(query: HandlerQuery) -> Select[tuple[object, ...]]:
    """The SELECT for :meth:`query`: filters, keyset position, order and limit."""
    c = handlers.c
    columns = [col for col in handlers.c if query.load_ctx or col.name != "ctx"]
    stmt = select(*columns).where(*query_filters(query))
    if query.after is not None:
        key = tuple_(c.started_at, c.handler_id)
        mark = tuple_(
            literal(query.after.started_at, UtcDateTime()),
            literal(query.after.handler_id, c.handler_id.type),
        )
        stmt = stmt.where(key < mark if query.descending else key > mark)
    if query.descending:
        stmt = stmt.order_by(c.started_at.desc(), c.handler_id.desc())
    else:
        stmt = stmt.order_by(c.started_at, c.handler_id)
    return stmt.limit(query.limit) if query.limit is not None else stmt


def served(table: FromClause, versions: Mapping[str, Sequence[str]] | None) -> ColumnElement[bool]:
    """Rows of ``table`` a process serving ``versions`` (name to versions) may run.

    A row recorded without a version (written before versions were) goes to
    any process serving its workflow name. ``None`` serves everything.
    """
    c = table.c
    if versions is None:
        return true()
    return or_(
        false(),
        *(
            and_(c.workflow_name == name, or_(c.version.is_(None), c.version.in_(list(served))))
            for name, served in sorted(versions.items())
        ),
    )


def claimable(
    table: FromClause, *, now: datetime, dead_owners: Sequence[str]
) -> ColumnElement[bool]:
    """Rows of ``table`` (handlers or an alias of it) that a live process may take over.

    Running, not idle unless its inbox holds an event, and unowned, owned by a
    process proven dead, or owned by one whose heartbeat is not alive at
    ``now`` (its owners row expired, or it has none).
    """
    c = table.c
    waiting = exists().where(inbox.c.handler_id == c.handler_id)
    owner_alive = exists().where(
        owners.c.owner_id == c.owner_id, owners.c.expires_at >= literal(now, UtcDateTime())
    )
    return and_(
        c.status == "running",
        or_(c.idle_since.is_(None), waiting),
        or_(c.owner_id.is_(None), c.owner_id.in_(list(dead_owners)), ~owner_alive),
    )
