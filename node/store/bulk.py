"""Bulk INSERTs through the driver, values converted as SQLAlchemy converts them.

`conn.execute(insert(table), [dict, ...])` runs SQLAlchemy's per-row parameter processing
(building, checking and converting every row's parameter dict) at a cost above SQLite's own
insert of the row; the hot writes (record versions, feed events, access-log leaves) therefore
go straight to the driver. What SQLAlchemy would do per value is kept: the statement is the one
it compiles for the dialect, and each column's bind processor (dates and times to text on
SQLite, for instance) is applied to that column's values. Statements and processors are worked
out once per (dialect, table, columns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Connection, Dialect

__all__ = ["insert_rows"]


@dataclass(frozen=True)
class _Plan:
    statement: str
    columns: tuple[str, ...]
    # for a positional driver: the caller's value index of each bound parameter, in order
    order: tuple[int, ...] | None
    # (value index, processor) for the columns whose values the dialect converts
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]


_PLANS: dict[tuple[str, str, tuple[str, ...]], _Plan] = {}
_UNSET = object()


def insert_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """INSERT `rows` (value tuples in the order of `columns`) into `table`: one executemany,
    or on SQLite one multi-row INSERT per _SQLITE_ROWS_PER_STATEMENT rows.

    Stores exactly what `conn.execute(insert(table), [dict(zip(columns, row)), ...])` stores;
    the columns left out get their server defaults (a column with a Python-side default must be
    given: ValueError). Does nothing for no rows.
    """
    plan = _plan(conn.dialect, table, tuple(columns))
    converters = plan.converters
    if converters:
        # A batch often shares one value per column (its time stamp): convert that once.
        last: list[tuple[Any, Any]] = [(_UNSET, None)] * len(converters)
        converted: list[Sequence[Any]] = []
        for row in rows:
            values = list(row)
            for k, (position, convert) in enumerate(converters):
                value = values[position]
                seen, done = last[k]
                if value is not seen:
                    done = convert(value)
                    last[k] = (value, done)
                values[position] = done
            converted.append(values)
        batch = converted
    else:
        batch = list(rows)
    if not batch:
        return
    order = plan.order
    if order is not None and conn.dialect.name == "sqlite":
        _insert_sqlite(conn, plan, order, batch)
    elif order is not None:
        conn.exec_driver_sql(plan.statement, [tuple([row[i] for i in order]) for row in batch])
    else:
        names = plan.columns
        conn.exec_driver_sql(plan.statement, [dict(zip(names, row, strict=True)) for row in batch])


# SQLite >= 3.32 binds up to 32,766 parameters per statement.
_SQLITE_MAX_PARAMS = 32766
_SQLITE_ROWS_PER_STATEMENT = 500


def _insert_sqlite(
    conn: Connection, plan: _Plan, order: tuple[int, ...], batch: Sequence[Sequence[Any]]
) -> None:
    """INSERT `batch` as multi-row `VALUES (..), (..)` statements of up to
    _SQLITE_ROWS_PER_STATEMENT rows each.

    The driver releases the GIL around every SQLite step and must take it back after: with
    executemany that is once per row, and while another thread runs Python each take-back can
    wait a whole switch interval (5 ms), which turned a 40 ms batch into seconds. One statement
    per chunk is one step per chunk.
    """
    per = max(1, min(_SQLITE_ROWS_PER_STATEMENT, _SQLITE_MAX_PARAMS // len(order)))
    head, values, row = plan.statement.partition(" VALUES ")
    if not values or not (row.startswith("(") and row.endswith(")")):
        raise ValueError(f"unexpected INSERT statement: {plan.statement}")
    for start in range(0, len(batch), per):
        chunk = batch[start : start + per]
        conn.exec_driver_sql(
            f"{head} VALUES {', '.join([row] * len(chunk))}",
            tuple([r[i] for r in chunk for i in order]),
        )


def _plan(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> _Plan:
    key = (dialect.name, table.name, columns)
    plan = _PLANS.get(key)
    if plan is None:
        missing = [c.name for c in table.c if c.name not in columns and c.default is not None]
        if missing:
            raise ValueError(f"{table.name}: give a value for {missing} (Python-side defaults)")
        compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
        order = None
        if compiled.positional:
            # Positional drivers bind in the table's column order, not in the caller's.
            order = tuple(columns.index(name) for name in compiled.positiontup or ())
            if sorted(order) != list(range(len(columns))):
                raise ValueError(f"{table.name}: the compiled INSERT binds {compiled.positiontup}")
        converters = []
        for position, name in enumerate(columns):
            column_type = table.c[name].type
            process = column_type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                converters.append((position, process))
        plan = _PLANS[key] = _Plan(str(compiled), columns, order, tuple(converters))
    return plan
