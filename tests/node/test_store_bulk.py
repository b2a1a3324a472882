"""insert_rows stores exactly what SQLAlchemy's own INSERT stores, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import delete, insert, select

from node.store import Store, StoreConflictError, from_db_time
from node.store.bulk import insert_rows
from node.store.store import EVENTS, RECORDS, SUBS

CST = dt.timezone(dt.timedelta(hours=8))


def record(row_id: str, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "row_id": row_id,
        "producer": "zd-market",
        "record_key": row_id * 8,
        "version": 1,
        "item_id": "admin_penalty",
        "catalog_version": "2026.1",
        "subject_index": "ab" * 16,
        "body": bytes(range(256)),
        "content_hash": "cd" * 32,
        "state": "active",
        "severity": "general",
        "decided_on": dt.date(2026, 2, 28),
        "disclosure_min_end": dt.date(2026, 5, 28),
        "disclosure_max_end": None,
        "disclosure_rule": "行政处罚 一般 3个月–1年",
        "objection": True,
        "created_at": dt.datetime(2026, 11, 25, 9, 30, 1, 123456, tzinfo=CST),
        "origin": "local",
    }
    values.update(changes)
    return values


def stored(store: Store) -> list[tuple[Any, ...]]:
    with store.read("read back") as conn:
        return [tuple(r) for r in conn.execute(select(RECORDS).order_by(RECORDS.c.row_id))]


def test_rows_read_back_as_sqlalchemy_stored_them(store: Store) -> None:
    rows = [record("a"), record("b", severity=None, decided_on=None, objection=False)]
    with store.write("through SQLAlchemy") as conn:
        conn.execute(insert(RECORDS), rows)
    expected = stored(store)
    with store.write("empty") as conn:
        conn.execute(delete(RECORDS))
    # the caller's column order is not the table's: the values must still land in place
    columns = sorted(rows[0])
    with store.write("through the driver") as conn:
        insert_rows(conn, RECORDS, columns, [tuple(r[c] for c in columns) for r in rows])
        insert_rows(conn, RECORDS, columns, [])  # nothing to do
    assert stored(store) == expected


def test_a_shared_value_is_converted_once_per_run_of_it(store: Store) -> None:
    stamp = dt.datetime(2026, 11, 25, 1, 2, 3, tzinfo=dt.UTC)
    later = dt.datetime(2026, 11, 25, 1, 2, 4, 500000, tzinfo=dt.UTC)
    with store.write("subscribe") as conn:
        conn.execute(insert(SUBS).values(subscriber="zd-tax", items="[]", last_seq=0,
                                         acked_seq=0, created_at=stamp))  # fmt: skip
        insert_rows(
            conn,
            EVENTS,
            ("subscriber", "seq", "kind", "record_row_id", "record_key", "version", "created_at"),
            [
                ("zd-tax", i, "upsert", f"r{i}", "k", 1, stamp if i < 3 else later)
                for i in (1, 2, 3)
            ],
        )
    with store.read("read back") as conn:
        times = conn.execute(select(EVENTS.c.created_at).order_by(EVENTS.c.seq)).scalars().all()
    assert [from_db_time(t) for t in times] == [stamp, stamp, later]


def test_a_column_with_a_python_side_default_must_be_given(store: Store) -> None:
    columns = [c for c in record("a") if c != "objection"]
    with (
        store.write("refused") as conn,
        pytest.raises(ValueError, match="objection"),
    ):
        insert_rows(conn, RECORDS, columns, [])


def test_a_large_batch_is_stored_whole_and_in_few_statements(store: Store) -> None:
    # 1,234 rows: more than one multi-row statement on SQLite, every row stored as given
    rows = [record(f"r{i:04d}", version=1 + i % 3, objection=i % 2 == 0) for i in range(1234)]
    with store.write("through SQLAlchemy") as conn:
        conn.execute(delete(RECORDS))  # the PostgreSQL database is the module's
        conn.execute(insert(RECORDS), rows)
    expected = stored(store)
    with store.write("empty") as conn:
        conn.execute(delete(RECORDS))
    columns = list(rows[0])
    statements: list[str] = []
    with store.write("through the driver") as conn:
        driver = conn.connection.driver_connection
        if store.dialect == "sqlite":
            driver.set_trace_callback(statements.append)  # type: ignore[union-attr]
        try:
            insert_rows(conn, RECORDS, columns, [tuple(r[c] for c in columns) for r in rows])
        finally:
            if store.dialect == "sqlite":
                driver.set_trace_callback(None)  # type: ignore[union-attr]
    assert stored(store) == expected
    if store.dialect == "sqlite":
        # one SQLite step per statement, not one per row (the driver gives the GIL up and takes
        # it back around every step)
        assert len([s for s in statements if s.startswith("INSERT")]) == 3


def test_a_duplicate_in_a_batch_fails_the_batch_and_stores_none_of_it(store: Store) -> None:
    rows = [record(f"d{i:03d}") for i in range(600)] + [record("d000")]
    columns = list(rows[0])
    with store.write("empty") as conn:
        conn.execute(delete(RECORDS))  # the PostgreSQL database is the module's
    with pytest.raises(StoreConflictError), store.write("duplicate") as conn:
        insert_rows(conn, RECORDS, columns, [tuple(r[c] for c in columns) for r in rows])
    assert stored(store) == []
