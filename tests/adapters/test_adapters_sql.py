"""SQL sources on real MariaDB and PostgreSQL: keyset batches, watermarks, resume, NULL refusal."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapters import ResumeState, SourceError
from adapters.sql import SqlSource, _why, decode_position_value, encode_position_value

T0 = dt.datetime(2026, 11, 1, 8, 0, 0)


def _create(url: str, name: str, rows: int, *, same_stamp_every: int = 3) -> sa.Table:
    meta = sa.MetaData()
    table = sa.Table(
        name,
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("account", sa.String(40), nullable=False),
        sa.Column("amount", sa.Numeric(18, 2), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=True),
        sa.Column("note", sa.String(100), nullable=True),
    )
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        meta.create_all(engine)
        with engine.begin() as conn:
            if rows:
                conn.execute(
                    table.insert(),
                    [
                        {
                            "id": i,
                            "account": f"户{i:05d}",
                            "amount": Decimal(f"{i}.50"),
                            # several rows share a stamp: the key must break the tie
                            "updated_at": T0 + dt.timedelta(minutes=i // same_stamp_every),
                            "note": None if i % 2 else "催缴两次",
                        }
                        # insert out of order, so order comes from the query, not the heap
                        for i in reversed(range(1, rows + 1))
                    ],
                )
    finally:
        engine.dispose()
    return table


def _exec(url: str, stmt: sa.Executable) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(stmt)
    finally:
        engine.dispose()


def test_reads_every_row_in_watermark_order_across_batches(db_url: str, table_name: str) -> None:
    _create(db_url, table_name, 23)
    source = SqlSource(db_url, table=table_name, key="id", watermark="updated_at", batch_size=5)
    assert source.columns() == ("id", "account", "amount", "updated_at", "note")
    rows = list(source.rows())
    assert [r["id"] for _, r in rows] == [str(i) for i in range(1, 24)]
    assert [n for n, _ in rows] == list(range(1, 24))
    assert rows[0][1]["amount"] == "1.50"
    assert rows[1][1]["note"] == "催缴两次"
    assert rows[0][1]["note"] == ""
    assert rows[0][1]["updated_at"] == "2026-11-01 08:00:00"


def test_crash_between_batches_then_resume_loses_and_doubles_nothing(
    db_url: str, table_name: str
) -> None:
    _create(db_url, table_name, 23)
    first = SqlSource(db_url, table=table_name, key="id", watermark="updated_at", batch_size=4)
    taken, saved = [], None
    for _, row in first.rows():
        taken.append(row["id"])
        if len(taken) % 4 == 0:
            saved = first.position().to_json()  # the caller saves after storing each batch
        if len(taken) == 10:
            break  # crash in the middle of the third batch: rows 9-10 were never stored
    assert saved is not None
    state = ResumeState.from_json(saved)
    again = SqlSource(db_url, table=table_name, key="id", watermark="updated_at", batch_size=4)
    rest = [r["id"] for _, r in again.rows(state)]
    stored = taken[:8] + rest
    assert stored == [str(i) for i in range(1, 24)]


def test_incremental_run_reads_only_new_and_changed_rows(db_url: str, table_name: str) -> None:
    table = _create(db_url, table_name, 6)
    source = SqlSource(db_url, table=table_name, key="id", watermark="updated_at")
    assert len(list(source.rows())) == 6
    state = source.position()
    later = T0 + dt.timedelta(days=1)
    _exec(
        db_url,
        table.update().where(table.c.id == 2).values(amount=Decimal("99.00"), updated_at=later),
    )
    _exec(
        db_url, table.insert().values(id=7, account="户00007", amount=Decimal(1), updated_at=later)
    )
    nxt = SqlSource(db_url, table=table_name, key="id", watermark="updated_at")
    rows = [(r["id"], r["amount"]) for _, r in nxt.rows(state)]
    assert rows == [("2", "99.00"), ("7", "1.00")]
    assert [
        n
        for n, _ in SqlSource(db_url, table=table_name, key="id", watermark="updated_at").rows(
            nxt.position()
        )
    ] == []


def test_query_source_and_key_only_order(db_url: str, table_name: str) -> None:
    _create(db_url, table_name, 7)
    source = SqlSource(
        db_url,
        query=f"SELECT id, account FROM {table_name} WHERE id > 2",
        key="id",
        batch_size=2,
        name="arrears-query",
    )
    assert source.columns() == ("id", "account")
    iterator = source.rows()
    assert [next(iterator)[1]["id"] for _ in range(3)] == ["3", "4", "5"]
    state = source.position()
    assert state.source == "arrears-query"
    rest = SqlSource(
        db_url,
        query=f"SELECT id, account FROM {table_name} WHERE id > 2",
        key="id",
        name="arrears-query",
    ).rows(state)
    assert [r["id"] for _, r in rest] == ["6", "7"]


def test_null_watermarks_are_refused_before_reading(db_url: str, table_name: str) -> None:
    table = _create(db_url, table_name, 3)
    _exec(db_url, table.update().where(table.c.id == 2).values(updated_at=None))
    with pytest.raises(SourceError, match="NULL"):
        list(SqlSource(db_url, table=table_name, key="id", watermark="updated_at").rows())


def _dup_keys(url: str, name: str) -> None:
    rows = ", ".join(f"('{k}', 'row{i}')" for i, k in enumerate("abccde"))
    _exec(url, sa.text(f"CREATE TABLE {name} (k VARCHAR(20) NOT NULL, v VARCHAR(20))"))
    _exec(url, sa.text(f"INSERT INTO {name} VALUES {rows}"))


def test_a_key_that_repeats_a_value_is_refused_before_reading(db_url: str, table_name: str) -> None:
    _dup_keys(db_url, table_name)
    # With batches of 3 the second "c" would be skipped (the next batch reads k > 'c').
    with pytest.raises(SourceError, match=r"key column 'k' is not unique \(1 row\(s\) repeat"):
        list(SqlSource(db_url, table=table_name, key="k", batch_size=3).rows())


def test_missing_table_and_column_are_source_errors(db_url: str, table_name: str) -> None:
    with pytest.raises(SourceError, match="no such table"):
        SqlSource(db_url, table=table_name, key="id").columns()
    _create(db_url, table_name, 1)
    with pytest.raises(SourceError, match="no column 'stamp'"):
        SqlSource(db_url, table=table_name, key="id", watermark="stamp").columns()


def test_unreachable_server_error_hides_the_password() -> None:
    source = SqlSource("postgresql://clerk:s3cret@127.0.0.1:1/test", table="t", key="id")
    with pytest.raises(SourceError) as error:
        source.columns()
    assert "s3cret" not in str(error.value)
    assert "127.0.0.1" in str(error.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://clerk@127.0.0.1:1/test?password=s3cret&sslmode=require",
        "mysql://clerk@127.0.0.1:1/test?passwd=s3cret",
        "mysql://clerk@127.0.0.1:1/test?PWD=s3cret&password=s3cret",
    ],
)
def test_a_password_given_as_a_query_parameter_is_hidden_too(url: str) -> None:
    source = SqlSource(url, table="t", key="id")
    assert "s3cret" not in source.display_url
    assert "=***" in source.display_url
    if url.startswith("postgresql"):
        assert "sslmode=require" in source.display_url  # other parameters stay readable
        with pytest.raises(SourceError) as error:
            source.columns()
        assert "s3cret" not in str(error.value)


def test_a_url_parameter_the_driver_does_not_take_is_a_source_error() -> None:
    source = SqlSource("mysql://clerk@127.0.0.1:1/test?PWD=s3cret", table="t", key="id")
    with pytest.raises(SourceError, match="does not take one of the URL's parameters") as error:
        source.columns()
    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize(
    "value",
    [7, "户00001", Decimal("1.50"), dt.date(2026, 1, 2), dt.datetime(2026, 1, 2, 3, 4, 5, 6)],
)
def test_position_values_round_trip_with_their_type(value: object) -> None:
    back = decode_position_value(encode_position_value(value))
    assert back == value
    assert type(back) is type(value)


def test_position_value_garbage_is_refused() -> None:
    with pytest.raises(ValueError, match="tag"):
        decode_position_value({"t": "pickle", "v": "x"})
    with pytest.raises(ValueError, match="tagged"):
        decode_position_value("7")


# --- without a server: SQLite stands in for the conversion and column choice -----------------


def _sqlite_with_json(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'arrears.db'}"
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, tags JSON)"))
            conn.execute(sa.text("""INSERT INTO t VALUES (1, '张某1', '[1.5, {"a": 2}]')"""))
            conn.execute(sa.text("INSERT INTO t VALUES (2, '张某2', NULL)"))
    finally:
        engine.dispose()
    return url


def test_read_only_selects_and_converts_just_the_named_columns(tmp_path: Path) -> None:
    url = _sqlite_with_json(tmp_path)
    everything = list(SqlSource(url, table="t", key="id").rows())
    assert everything[0][1] == {"id": "1", "name": "张某1", "tags": '[1.5,{"a":2}]'}
    source = SqlSource(url, table="t", key="id", batch_size=1)
    source.read_only(["name"])
    assert [r for _, r in source.rows()] == [{"name": "张某1"}, {"name": "张某2"}]
    assert source.position().position["key"] == {"t": "int", "v": "2"}  # the key is still read
    with pytest.raises(SourceError, match="no column 'nope'"):
        source.read_only(["nope"])


def test_a_key_that_repeats_a_value_is_refused_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dup.db'}"
    _dup_keys(url, "t")
    for source in (
        SqlSource(url, table="t", key="k", batch_size=3),
        SqlSource(url, query="SELECT k, v FROM t", key="k", batch_size=3),
    ):
        with pytest.raises(SourceError, match="key column 'k' is not unique"):
            list(source.rows())


def test_driver_messages_lose_their_quoted_values_but_keep_configured_names(
    tmp_path: Path,
) -> None:
    url = _sqlite_with_json(tmp_path)
    query = "SELECT id, name FROM t WHERE name = '张某1' '11010519491231002X'"
    with pytest.raises(SourceError) as error:
        SqlSource(url, query=query, key="id").columns()
    assert "syntax error" in str(error.value)
    assert "11010519491231002X" not in str(error.value)
    assert "张某1" not in str(error.value)
    with pytest.raises(SourceError) as missing:
        SqlSource(url, query="SELECT id FROM credex_gone", key="id").columns()
    assert "credex_gone" in str(missing.value)  # not quoted by SQLite: nothing to redact
    assert _why(Exception("no table \"t\" near 'x'"), ["t"]) == "Exception: no table \"t\" near '…'"


def test_driver_messages_mask_identifiers_the_driver_did_not_quote() -> None:
    """A driver may print a value bare, e.g. in parentheses after a key name: the ID number
    left the quote redaction untouched."""
    error = Exception("duplicate key value violates unique constraint: (id)=(11010519491231002X)")
    why = _why(error)
    assert "11010519491231002X" not in why
    assert "duplicate key value violates unique constraint" in why
    bare_account = _why(Exception("bad value 6222021234567890123 in row 7"))
    assert "6222021234567890123" not in bare_account
    assert bare_account.endswith("in row 7")
