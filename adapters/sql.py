"""SQL tables and queries (PostgreSQL via psycopg, MariaDB/MySQL via pymysql), read batch-wise.

Rows are read in keyset order: by the watermark column then the key column when a watermark is
named (incremental reads: a row whose watermark moved forward is read again on the next run),
by the key alone otherwise. Each batch is one short `SELECT ... WHERE (wm, key) > (last wm,
last key) ORDER BY wm, key LIMIT n`, so there is no long-running transaction and no OFFSET.
The position after each row is the (watermark, key) pair, kept as tagged JSON so a resume binds
the same type (integer, decimal, text, date or datetime).

Promises and limits, stated so operators can choose the right columns:
- the key must be unique and NOT NULL; the watermark must be NOT NULL (a NULL could never be
  read, and of two rows sharing a key one could be skipped, so the reader counts both first
  and refuses to start);
- the watermark must only grow with every insert and update (an update counter or a
  database-assigned timestamp). A row committed late with a watermark below one already read
  is not picked up: give such sources a sequence, not a client clock.

Only the columns a mapping reads are converted to text (`read_only`, which `run_mapping` calls
with the mapped columns): the table's other columns are not even selected, so a column of a type
credex does not write as text, or one that holds what must not be collected, never matters. A
value that cannot be written as text (see `cell_text`) rejects its row, naming the column.

This is the only adapters module that imports SQLAlchemy. Error messages give the driver's
first line with every quoted literal in it replaced by "…" (a driver quotes the value that
failed a cast, which may be an ID number or a name) and any ID number or USCC left unquoted
masked (`catalog.redact_identifiers`), and never the connection URL's password
(nor a password-like query parameter such as `?password=`) or a bound parameter; the table, key
and watermark names stay readable.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from adapters.errors import SourceError
from adapters.source import ResumeState, Row, check_resume, row_cells
from catalog.identifiers import redact_identifiers

__all__ = ["SqlSource", "decode_position_value", "encode_position_value"]

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def encode_position_value(value: object) -> dict[str, str]:
    """Tag a key or watermark value so that it survives JSON with its type."""
    if isinstance(value, bool):
        return {"t": "int", "v": str(int(value))}
    if isinstance(value, int):
        return {"t": "int", "v": str(value)}
    if isinstance(value, Decimal):
        return {"t": "dec", "v": format(value, "f")}
    if isinstance(value, float):
        return {"t": "float", "v": repr(value)}
    if isinstance(value, dt.datetime):
        return {"t": "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {"t": "date", "v": value.isoformat()}
    if isinstance(value, str):
        return {"t": "str", "v": value}
    raise TypeError(f"unsupported key or watermark type {type(value).__name__}")


def decode_position_value(tagged: Any) -> object:
    """Rebuild a value tagged by `encode_position_value`; ValueError on anything else."""
    if not isinstance(tagged, dict) or not isinstance(tagged.get("v"), str):
        raise ValueError("not a tagged value")
    kind, text = tagged.get("t"), tagged["v"]
    decoders: dict[Any, Any] = {
        "int": int,
        "dec": Decimal,
        "float": float,
        "datetime": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat,
        "str": str,
    }
    if kind not in decoders:
        raise ValueError(f"unknown tag {kind!r}")
    return decoders[kind](text)


def _driver_url(url: str) -> sa.URL:
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
# Query parameters that drivers take as a password or another secret (libpq "password",
# MySQL "passwd", ODBC "PWD", tokens and keys for cloud IAM logins).
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)


def _why(error: Exception, keep: Iterable[str] = ()) -> str:
    """The driver's exception class and first line, with quoted literals other than `keep`
    (names the operator wrote: table, key, watermark) replaced by "…"."""
    orig = getattr(error, "orig", None) or error
    first = (str(orig).strip().splitlines() or [""])[0]
    names = {n for n in keep if n}

    def redact(match: re.Match[str]) -> str:
        text = match.group(0)
        return text if text[1:-1] in names else text[0] + "…" + text[0]

    # Unquoted values too: a driver may print one bare (MySQL's "Duplicate entry" key parts,
    # a value after "=" or in parentheses); any ID number or USCC left is masked.
    cleaned = redact_identifiers(_QUOTED.sub(redact, first))
    return f"{type(orig).__name__}: {cleaned[:200]}"


class SqlSource:
    """Rows of a table (or of a SELECT) in a PostgreSQL or MariaDB/MySQL database.

    `url` is an SQLAlchemy URL ("postgresql://user@host/db" uses psycopg, "mysql://" and
    "mariadb://" use pymysql); exactly one of `table` ("name" or "schema.name") and `query`;
    `key` is the unique ordering column; `watermark` the optional incremental column.
    """

    kind = "sql"

    def __init__(
        self,
        url: str,
        *,
        key: str,
        table: str | None = None,
        query: str | None = None,
        watermark: str | None = None,
        batch_size: int = 1000,
        name: str | None = None,
    ) -> None:
        if (table is None) == (query is None):
            raise SourceError(name or "sql source", "name exactly one of table and query")
        try:
            self._url = _driver_url(url)
        except sa.exc.ArgumentError:
            raise SourceError(name or "sql source", "the database URL is malformed") from None
        self.name = name or table or "query"
        self._table, self._query = table, query
        self._key, self._watermark = key, watermark
        self._batch_size = batch_size
        self._engine: sa.Engine | None = None
        self._source: sa.FromClause | None = None
        self._columns: tuple[str, ...] | None = None
        self._only: tuple[str, ...] | None = None
        self._row_number = 0
        self._last: tuple[object, object] | None = None

    @property
    def _names(self) -> tuple[str, ...]:
        """Names from the configuration that error messages may show."""
        names = (self._table or "", self._key, self._watermark or "")
        return (*names, self._table.rpartition(".")[2]) if self._table else names

    def read_only(self, columns: Iterable[str]) -> None:
        """Select and convert only these columns (plus the key and watermark for ordering).

        Rows then hold exactly these columns; a name the source lacks is refused
        (`SourceError`). Called by `run_mapping` with the mapped columns.
        """
        wanted = tuple(dict.fromkeys(columns))
        available = self.columns()
        missing = [c for c in wanted if c not in available]
        if missing:
            raise SourceError(self.name, f"no column {missing[0]!r}")
        self._only = wanted

    @property
    def display_url(self) -> str:
        """The database URL without its password: neither the one before "@" nor one given as
        a query parameter (`?password=`, `passwd`, `pwd`, `secret`, `token` ...), shown as ***."""
        url = self._url
        if not url.query:
            return url.render_as_string(hide_password=True)
        parts = []
        for name, value in url.query.items():
            for one in value if isinstance(value, tuple) else (value,):
                shown = "***" if _SECRET_PARAMETER.search(name) else quote(one, safe="")
                parts.append(f"{quote(name, safe='')}={shown}")
        bare = url.set(query={}).render_as_string(hide_password=True)
        return f"{bare}?{'&'.join(parts)}"

    def _connect(self) -> sa.Engine:
        if self._engine is None:
            try:
                self._engine = sa.create_engine(self._url, poolclass=sa.pool.NullPool)
            except (sa.exc.ArgumentError, ImportError) as error:
                raise SourceError(
                    self.name, f"cannot use the database URL ({_why(error, self._names)})"
                ) from None
        return self._engine

    def _from(self) -> sa.FromClause:
        if self._source is not None:
            return self._source
        engine = self._connect()
        try:
            if self._table is not None:
                schema, _, table = self._table.rpartition(".")
                self._source = sa.Table(
                    table, sa.MetaData(), schema=schema or None, autoload_with=engine
                )
            else:
                assert self._query is not None
                probe = sa.text(self._query).columns().subquery("credex_probe")
                with engine.connect() as conn:
                    names = list(
                        conn.execute(
                            sa.select(sa.literal_column("*")).select_from(probe).limit(0)
                        ).keys()
                    )
                self._source = (
                    sa.text(self._query)
                    .columns(*(sa.column(n) for n in names))
                    .subquery("credex_src")
                )
        except sa.exc.NoSuchTableError:
            raise SourceError(self.name, "no such table") from None
        except sa.exc.SQLAlchemyError as error:
            raise SourceError(
                self.name, f"cannot read from {self.display_url} ({_why(error, self._names)})"
            ) from None
        except TypeError as error:
            # what a driver's connect() raises for a URL parameter it does not take (PyMySQL)
            raise SourceError(
                self.name,
                f"cannot connect to {self.display_url}: the driver does not take one of the "
                f"URL's parameters ({_why(error, self._names)})",
            ) from None
        assert self._source is not None
        for needed in (self._key, self._watermark):
            if needed is not None and needed not in self._source.c:
                raise SourceError(self.name, f"no column {needed!r} (key or watermark)")
        return self._source

    def columns(self) -> tuple[str, ...]:
        """The table's (or query's) column names."""
        if self._columns is None:
            self._columns = tuple(c.name for c in self._from().c)
        return self._columns

    def position(self) -> ResumeState:
        """The state after the last row yielded: its watermark and key."""
        position: dict[str, Any] = {}
        if self._last is not None:
            position["key"] = encode_position_value(self._last[1])
            if self._watermark is not None:
                position["watermark"] = encode_position_value(self._last[0])
        return ResumeState(
            kind=self.kind, source=self.name, row_number=self._row_number, position=position
        )

    def _restore(self, resume: ResumeState | None) -> None:
        self._row_number, self._last = 0, None
        if resume is None:
            return
        check_resume(resume, self.kind, self.name)
        self._row_number = resume.row_number
        if "key" not in resume.position:
            return
        try:
            key = decode_position_value(resume.position["key"])
            mark = (
                decode_position_value(resume.position["watermark"])
                if self._watermark is not None
                else None
            )
        except (KeyError, ValueError):
            raise SourceError(self.name, "the resume state has no usable watermark/key") from None
        self._last = (mark, key)

    def rows(self, resume: ResumeState | None = None) -> Iterator[Row]:
        """Yield rows in (watermark, key) order after the resume point, one batch at a time.

        Refuses to start when the watermark or key column holds NULLs, or the key column repeats
        a value (those rows would be lost).
        """
        source = self._from()
        self._restore(resume)
        key = source.c[self._key]
        mark = source.c[self._watermark] if self._watermark is not None else None
        order = [key] if mark is None else [mark, key]
        columns = self.columns() if self._only is None else self._only
        selected = dict.fromkeys([*columns, *(c.name for c in order)])
        engine = self._connect()
        try:
            with engine.connect() as conn:
                nulls = sa.or_(*(c.is_(None) for c in order))
                count = conn.execute(sa.select(sa.func.count()).select_from(source).where(nulls))
                if count.scalar_one():
                    raise SourceError(
                        self.name, "rows with NULL in the key or watermark column (never readable)"
                    )
                # Keyset paging resumes after "key > last": of two rows sharing a key value, one
                # would be skipped whenever a batch ends between them. Compared by the database,
                # so its collation decides ("a" and "A" are one value in MariaDB) either way.
                repeats = conn.execute(
                    sa.select(sa.func.count() - sa.func.count(sa.distinct(key))).select_from(source)
                ).scalar_one()
                if repeats:
                    raise SourceError(
                        self.name,
                        f"the key column {self._key!r} is not unique ({repeats} row(s) repeat a "
                        "value of another row; rows would be skipped): name a unique column",
                    )
                conn.rollback()
                while True:
                    stmt = sa.select(*(source.c[c] for c in selected))
                    stmt = stmt.order_by(*order).limit(self._batch_size)
                    if self._last is not None:
                        last_mark, last_key = self._last
                        after = key > last_key
                        if mark is not None:
                            after = sa.or_(mark > last_mark, sa.and_(mark == last_mark, after))
                        stmt = stmt.where(after)
                    batch = conn.execute(stmt).all()
                    # End the read transaction between batches: no snapshot held for hours.
                    conn.rollback()
                    for record in batch:
                        values = record._mapping
                        self._row_number += 1
                        self._last = (
                            values[mark.name] if mark is not None else None,
                            values[key.name],
                        )
                        # Only the wanted columns are written as text: an unmapped column of a
                        # type credex cannot write (arrays of decimals ...) never stops the run.
                        yield self._row_number, row_cells(values, columns)
                    if len(batch) < self._batch_size:
                        return
        except sa.exc.SQLAlchemyError as error:
            raise SourceError(
                self.name, f"cannot read from {self.display_url} ({_why(error, self._names)})"
            ) from None
        finally:
            engine.dispose()
