"""Hot single-statement reads straight through the driver (the query path's record lookup).

Running a SELECT through a SQLAlchemy Connection costs several times what SQLite takes to
answer it: the connection and transaction objects, the begin hook that emits BEGIN, the
execution context and the result wrapper. A read that is one statement needs none of it (one
statement is its own consistent snapshot), so the statement is compiled once per dialect and
run on a pooled driver connection. Only columns the driver already returns in their final form
(text, integers, bytes) may be read this way; driver errors are raised as SQLAlchemy's, so
`translate_errors` classifies them as for every other store call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Select, exc

__all__ = ["DriverRead"]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...] | None  # parameter names in binding order (positional drivers)


class DriverRead:
    """One SELECT, compiled per dialect on first use, run on a pooled driver connection."""

    def __init__(self, statement: Select[Any]) -> None:
        """Run `statement` (bound parameters by name) with `rows`."""
        self._statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def rows(self, engine: Engine, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """All rows of the statement for `params`, as the driver returns them.

        Raises SQLAlchemy's DBAPIError subclasses for driver errors (wrap the call in
        `translate_errors`).
        """
        dialect = engine.dialect
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            done = self._statement.compile(dialect=dialect)
            positions = tuple(done.positiontup or ()) if done.positional else None
            compiled = self._compiled[dialect.name] = _Compiled(str(done), positions)
        args: Any = (
            dict(params)
            if compiled.positions is None
            else tuple(params[name] for name in compiled.positions)
        )
        dbapi_error = dialect.loaded_dbapi.Error
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(compiled.sql, args)
                return [tuple(row) for row in cursor.fetchall()]
            finally:
                cursor.close()
        except dbapi_error as error:
            raise exc.DBAPIError.instance(
                compiled.sql, None, error, dbapi_error, dialect=dialect
            ) from None
        finally:
            raw.close()
