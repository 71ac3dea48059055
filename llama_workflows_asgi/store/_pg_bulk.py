"""PostgreSQL spellings of the progress write's bulk statements: arrays, not lists.

An ``IN (...)`` list of bound ids is rendered anew for every length (one
placeholder and one cast per id), which costs more than the statement's
round trip; ``= ANY($1::type[])`` is one fixed statement whatever the count.
Likewise an executemany of N rows is N executions on the server, and
SQLAlchemy processes every row's parameters apart; ``INSERT ... SELECT FROM
unnest(one array per column)`` is one execution of one fixed statement, the
rows travelling as arrays the driver encodes in C.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BindParameter,
    Column,
    ColumnElement,
    Table,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY

_PREFIX = "each_"


def any_of(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column = ANY(:name)``, ``name`` bound to a list of values of ``column``'s type."""
    return column == any_(_array(name, column))


def unnest_insert(table: Table, conflict: Sequence[Column[Any]] | None = None) -> postgresql.Insert:
    """``INSERT`` of every column of ``table`` from arrays, skipping the rows that
    conflict on ``conflict``'s unique index (on any, when ``None``).

    Bind its parameters with :func:`by_column`.
    """
    names = [column.name for column in table.c]
    arrays = [_array(_PREFIX + column.name, column) for column in table.c]
    rows = func.unnest(*arrays).table_valued(*names).render_derived(name="each")
    return (
        postgresql.insert(table)
        .from_select(names, select(*(literal_column(name) for name in names)).select_from(rows))
        .on_conflict_do_nothing(index_elements=None if conflict is None else list(conflict))
    )


def _array(name: str, column: ColumnElement[Any]) -> BindParameter[list[Any]]:
    array: ARRAY[Any] = ARRAY(column.type)
    return bindparam(name, type_=array)  # type: ignore[arg-type]  # typed by its item type


def by_column(table: Table, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The parameters of :func:`unnest_insert` for ``rows`` (every column of each row)."""
    return {_PREFIX + column.name: [row[column.name] for row in rows] for column in table.c}
