"""Bulk statements of the hot writes, in PostgreSQL's cheapest spelling: arrays, not lists.

An ``IN (...)`` list of bound ids is rendered anew for every length (one
placeholder and one cast per id), which costs more than the statement's round
trip; ``= ANY($1::type[])`` is one fixed statement whatever the count.
Likewise many rows inserted by executemany are as many executions on the
server, and as multi-row ``VALUES`` (SQLAlchemy's insertmanyvalues) one long
statement rendered for every batch size; ``INSERT ... SELECT FROM unnest(one
array per column)`` is one fixed statement, executed once, its rows sent as
arrays the driver encodes in C. SQLite keeps the plain forms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BindParameter,
    Column,
    ColumnElement,
    CursorResult,
    Executable,
    Insert,
    Select,
    String,
    Table,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.selectable import TableValuedAlias

IdsMatch = Callable[[ColumnElement[Any]], ColumnElement[bool]]
"""Given a column, the condition that its value is one of the bound ``ids``."""

_IDS: BindParameter[list[Any]] = bindparam("ids", expanding=True)


def by_dialect(statement: Callable[[IdsMatch], Executable]) -> dict[str, Executable]:
    """``statement`` for each dialect, its ``ids`` (a list) bound as an expanded
    ``IN`` list on SQLite and as one array (``= ANY``) on PostgreSQL."""
    return {
        "sqlite": statement(lambda column: column.in_(_IDS)),
        "postgresql": statement(lambda column: column == any_(_array("ids", column))),
    }


class BulkInsert:
    """One ``INSERT`` of many rows of every column of ``table``, skipping the rows
    that conflict on the unique index of ``conflict`` (on any, when ``None``)
    and returning the ``returning`` columns of the rows written."""

    def __init__(
        self,
        table: Table,
        *,
        conflict: Sequence[Column[Any]] | None = None,
        returning: Sequence[Column[Any]] = (),
    ) -> None:
        self._keys = [column.name for column in table.c]
        index = None if conflict is None else list(conflict)
        rows = unnested({name: table.c[name] for name in self._keys})
        # SELECT *: the derived columns, named and ordered as the table's.
        every: Select[Any] = select(literal_column("*"))
        pg = postgresql.insert(table).from_select(self._keys, every.select_from(rows))
        pg = pg.on_conflict_do_nothing(index_elements=index)
        lite = sqlite.insert(table).on_conflict_do_nothing(index_elements=index)
        self.postgresql: Insert = pg.returning(*returning) if returning else pg
        """The PostgreSQL statement: one array parameter per column, named as the column."""
        self._sqlite: Executable = lite.returning(*returning) if returning else lite

    async def execute(
        self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]
    ) -> CursorResult[Any]:
        """Insert ``rows`` (each with a value for every column) in one statement."""
        if conn.dialect.name != "postgresql":
            return await conn.execute(self._sqlite, rows)
        return await conn.execute(self.postgresql, by_key(rows, self._keys))


def unnested(columns: Mapping[str, ColumnElement[Any]]) -> TableValuedAlias:
    """``unnest(...) AS each(<keys>)``: one array parameter per key of ``columns``,
    typed like its column; bind them with :func:`by_key`."""
    arrays = [_array(key, column) for key, column in columns.items()]
    return func.unnest(*arrays).table_valued(*columns).render_derived(name="each")


def by_key(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, list[Any]]:
    """The parameters of :func:`unnested` for ``rows``: each key's values, in row order."""
    return {key: [row[key] for row in rows] for key in keys}


def _array(name: str, column: ColumnElement[Any]) -> BindParameter[list[Any]]:
    item = column.type
    if isinstance(item, String) and item.length is not None:
        # The array is cast explicitly, and an explicit cast to varchar(n)
        # truncates silently: cast to varchar, so the column's own assignment
        # refuses a value too long, as a plain INSERT or UPDATE would.
        item = item.copy()
        item.length = None
    array: ARRAY[Any] = ARRAY(item, dimensions=1)
    return bindparam(name, type_=array)  # type: ignore[arg-type]  # typed by its item type
