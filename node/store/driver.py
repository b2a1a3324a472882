"""Hot statements straight through the driver: the query path's record lookup, nonce insert and
access-log state update.

Running one statement through a SQLAlchemy Connection costs several times what SQLite takes to
run it: the execution context, parameter processing and the result wrapper (and, for a lone
read, the connection and transaction objects and the begin hook that emits BEGIN). The
statement is compiled once per dialect and run on the driver's own cursor: a lone SELECT on a
pooled connection (one statement is its own consistent snapshot), or any statement inside a
transaction the store already holds. Values are converted as SQLAlchemy would convert them
(each bound parameter's type's bind processor, timestamps to text on SQLite for instance);
results come back as the driver returns them, so only columns in their final form (text,
integers, bytes) may be read this way. Driver errors are raised as SQLAlchemy's, so
`translate_errors` classifies them as for every other store call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.expression import Executable

__all__ = ["DriverStatement"]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...] | None  # parameter names in binding order (positional drivers)
    converters: tuple[tuple[str, Callable[[Any], Any]], ...]  # (name, bind processor)


class DriverStatement:
    """One statement with named bound parameters, compiled per dialect on first use."""

    def __init__(self, statement: Executable) -> None:
        """Run `statement` with `execute` (in a transaction) or `rows` (a lone read)."""
        self._statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def _plan(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            done = self._statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            positions = tuple(done.positiontup or ()) if done.positional else None
            converters = []
            for name, bind in done.binds.items():
                process = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None:
                    converters.append((name, process))
            compiled = self._compiled[dialect.name] = _Compiled(
                str(done), positions, tuple(converters)
            )
        return compiled

    def _args(self, compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        values = dict(params)
        for name, process in compiled.converters:
            if name in values:
                values[name] = process(values[name])
        if compiled.positions is None:
            return values
        return tuple(values[name] for name in compiled.positions)

    def _run(self, driver: Any, dialect: Dialect, params: Mapping[str, Any]) -> list[Any]:
        compiled = self._plan(dialect)
        args = self._args(compiled, params)
        dbapi_error = dialect.loaded_dbapi.Error
        try:
            cursor = driver.cursor()
            try:
                cursor.execute(compiled.sql, args)
                # Fetch everything even for one row: a RETURNING statement is complete (and
                # its cursor done) only once its rows are read, before the commit.
                return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
            finally:
                cursor.close()
        except dbapi_error as error:
            raise exc.DBAPIError.instance(
                compiled.sql, None, error, dbapi_error, dialect=dialect
            ) from None

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run the statement inside `conn`'s open transaction; return its rows (if any)."""
        return self._run(conn.connection.driver_connection, conn.dialect, params)

    def rows(self, engine: Engine, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run a lone SELECT on a pooled driver connection; return all its rows.

        Raises SQLAlchemy's DBAPIError subclasses for driver errors (wrap the call in
        `translate_errors`).
        """
        raw = engine.raw_connection()
        try:
            return self._run(raw.driver_connection, engine.dialect, params)
        finally:
            raw.close()
